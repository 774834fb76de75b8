"""Lesion labels for synthesis: where they come from, how they are augmented and fitted (Sec. 2.5, 2.8).

A request's lesion source becomes a pool of label slices, uint8 (N, H, W) at the artifacts' image
size with a lesion in each: the artifacts' lesion library, or the axial slices with a lesion of the
label NIfTI files a user uploaded. Each draw takes a random pool label, flips, rotates, scales and
shifts it (Sec. 2.8) and keeps it only if every lesion pixel lies inside the brain mask of the
structural feature map (Sec. 2.5: "if the product of mask and selected label is 0"), re-drawing
otherwise; several lesions per sample must also not overlap.

What label files cost is bounded from their headers before a voxel is read (:func:`label_work`, the
service's upload check and :func:`read_label_files` alike): voxels decoded (the input) and axial slices
(each becomes an (H, W) pool slice, the output), per file and per set; no more than the header's data
offset plus its voxels is ever read, or decompressed from a ``.nii.gz``.
"""

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from mrisynth.conventions import LABELS
from mrisynth.settings import Settings, get_settings
from worker.request import LesionControls

log = logging.getLogger(__name__)

LABEL_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
"""File name endings read as label files in an uploaded directory."""

MAX_LABEL_VOXELS = 2 * 240 * 240 * 155
"""Most voxels of one label file: twice a BraTS volume."""

MAX_DATA_OFFSET = 1 << 20
"""Largest header data offset (``vox_offset``) of a label file, in bytes: room for its extensions."""

DAMAGED: tuple[type[Exception], ...] = (
    nib.spatialimages.HeaderDataError,
    OSError,
    EOFError,
    OverflowError,
    ValueError,
    zlib.error,
)
"""What reading a damaged or inconsistent NIfTI file (or its gzip stream) raises."""

HEADER_BYTES = nib.Nifti2Header.template_dtype.itemsize
"""Bytes read to find a file's header: a NIfTI-2 header's (540), more than a NIfTI-1 header's (348)."""


@dataclass(frozen=True)
class LabelLimits:
    """What a set of label files may cost, all files together.

    Attributes:
        max_slices: axial slices (a 2D file is one); each becomes an (H, W) slice of the lesion pool,
            so the pool holds at most ``max_slices * H * W`` bytes.
        max_voxels: voxels decoded.
    """

    max_slices: int
    max_voxels: int

    @classmethod
    def of(cls, settings: Settings) -> "LabelLimits":
        """The limits of the settings (``max_lesion_set_slices``, ``max_lesion_set_voxels``)."""
        return cls(settings.max_lesion_set_slices, settings.max_lesion_set_voxels)


@dataclass(frozen=True)
class LabelWork:
    """What reading label files costs, from their headers.

    Attributes:
        slices: axial slices: the last axis of a 3D file (after axes of length 1 past the second are
            dropped), 1 for a 2D file.
        voxels: voxels decoded.
        read_bytes: bytes read (decompressed) from the files: data offset plus voxels times their size.
    """

    slices: int
    voxels: int
    read_bytes: int


def label_header(block: bytes) -> nib.Nifti1Header:
    """The NIfTI-1 or NIfTI-2 header at the start of a file.

    Args:
        block: the file's first :data:`HEADER_BYTES` bytes (decompressed), or all of a shorter file.

    Raises:
        ValueError: if the bytes hold no NIfTI header, or a damaged one.
    """
    for klass in (nib.Nifti2Header, nib.Nifti1Header):
        if klass.may_contain_header(block):
            try:
                return klass(block[: klass.template_dtype.itemsize], check=True)
            except (nib.spatialimages.HeaderDataError, ValueError) as error:
                raise ValueError(f"not a NIfTI image ({error})") from error
    raise ValueError("not a NIfTI image (no NIfTI-1 or NIfTI-2 header)")


def label_work(header: nib.Nifti1Header, limits: LabelLimits) -> LabelWork:
    """Check a label file's header and say what reading it costs, before any voxel is read.

    Args:
        header: the file's header (:func:`label_header`).
        limits: the set's limits; one file may not exceed them alone.

    Raises:
        ValueError: saying what is wrong: voxels that are not numbers, an axis < 1, more or fewer axes
            than 2D (X, Y) or 3D (X, Y, Z), a data offset over :data:`MAX_DATA_OFFSET`, more voxels than
            :data:`MAX_LABEL_VOXELS` or ``limits.max_voxels``, more slices than ``limits.max_slices``.
    """
    shape, dtype = tuple(int(n) for n in header.get_data_shape()), header.get_data_dtype()
    if dtype.kind not in "biuf":
        raise ValueError(f"voxels of type {dtype}, not numbers")
    if not shape or min(shape) < 1:
        raise ValueError(f"shape {shape} has no voxels")
    axes = shape[:2] + tuple(n for n in shape[2:] if n != 1)
    if len(axes) not in (2, 3):
        raise ValueError(f"a label must be 2D (X, Y) or 3D (X, Y, Z), got shape {shape}")
    offset = int(header.get_data_offset())
    if offset > MAX_DATA_OFFSET:
        raise ValueError(f"data offset {offset} bytes (vox_offset), more than the {MAX_DATA_OFFSET} allowed")
    voxels = int(np.prod(shape, dtype=np.int64))
    most = min(MAX_LABEL_VOXELS, limits.max_voxels)
    if voxels > most:
        raise ValueError(f"{voxels} voxels {shape}, more than the {most} allowed per file")
    slices = axes[2] if len(axes) == 3 else 1
    if slices > limits.max_slices:
        raise ValueError(
            f"{slices} axial slices {shape}, more than the {limits.max_slices} allowed per lesion set "
            "(max_lesion_set_slices)"
        )
    return LabelWork(slices=slices, voxels=voxels, read_bytes=offset + voxels * dtype.itemsize)


def set_work(works: Sequence[LabelWork], limits: LabelLimits) -> LabelWork:
    """What a set of label files costs in all (each checked by :func:`label_work`).

    Raises:
        ValueError: if the files together have more slices or voxels than ``limits`` allow.
    """
    total = LabelWork(
        slices=sum(work.slices for work in works),
        voxels=sum(work.voxels for work in works),
        read_bytes=sum(work.read_bytes for work in works),
    )
    if total.slices > limits.max_slices:
        raise ValueError(
            f"{total.slices} axial slices in all, more than the {limits.max_slices} of a lesion set "
            "(max_lesion_set_slices)"
        )
    if total.voxels > limits.max_voxels:
        raise ValueError(
            f"{total.voxels} voxels in all, more than the {limits.max_voxels} of a lesion set "
            "(max_lesion_set_voxels)"
        )
    return total


def read_file_work(path: Path, limits: LabelLimits) -> tuple[nib.Nifti1Header, LabelWork]:
    """A label file's header and :func:`label_work`; only its first :data:`HEADER_BYTES` are read.

    Raises:
        ValueError: naming the file, as :func:`label_work`, or if it cannot be read.
    """
    try:
        with ImageOpener(str(path)) as stream:
            header = label_header(stream.read(HEADER_BYTES))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    except DAMAGED as error:
        raise ValueError(f"{path}: a damaged NIfTI image ({error})") from error
    try:
        return header, label_work(header, limits)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def label_files(path: Path) -> list[Path]:
    """The label files of a lesion source: the file itself, or a folder's ``*.nii[.gz]``, sorted."""
    if not path.exists():
        raise ValueError(f"lesion_source {path} does not exist")
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.rglob("*") if p.is_file() and p.name.endswith(LABEL_SUFFIXES) and p.name[0] != "."
    )


def read_voxels(path: Path, header: nib.Nifti1Header, work: LabelWork) -> tuple[np.ndarray, np.ndarray]:
    """A checked NIfTI file's voxels (X, Y) or (X, Y, Z), axes of length 1 past the second dropped, and
    its (4, 4) affine, reading (decompressing) only its first ``work.read_bytes`` bytes.

    Args:
        path: the file.
        header: its header (:func:`read_file_work`).
        work: its cost (:func:`label_work`).

    Raises:
        ValueError: naming the file, if it is damaged or ends before its last voxel.
    """
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        with ImageOpener(str(path)) as stream:
            content = stream.read(work.read_bytes)
        if len(content) < work.read_bytes:
            raise ValueError(f"the file ends {work.read_bytes - len(content)} bytes before its last voxel")
        image = klass.from_bytes(content)
        data = np.asanyarray(image.dataobj)
    except DAMAGED as error:
        raise ValueError(f"{path}: a damaged NIfTI image ({error})") from error
    data = data.reshape(data.shape[:2] + tuple(n for n in data.shape[2:] if n != 1))
    return data, np.asarray(image.affine, dtype=np.float64)


LABEL_3_HINT = (
    "; these labels are BraTS 2018-2021's (1 necrotic core, 2 edema, 4 enhancing tumour): 3 is enhancing "
    "tumour in BraTS 2023 but non-enhancing core in BraTS 2015, so it is not guessed; relabel 3 as 4 "
    "(BraTS 2023) or as 1 (BraTS 2015) and upload again"
)
"""Added to the refusal of a label holding 3, the one value whose meaning depends on the BraTS release."""


def check_label_values(path: Path, data: np.ndarray) -> np.ndarray:
    """Label voxels as uint8, values in ``LABELS``.

    A 3 is refused like any other value outside them, with :data:`LABEL_3_HINT`: it is BraTS 2023's
    enhancing tumour but BraTS 2015's non-enhancing core, so no mapping is right for every file
    (:mod:`mrisynth.brats` maps it by the release of a dataset's layout, which an upload does not have).

    Args:
        path: the file, for the message.
        data: its voxels, any shape.

    Raises:
        ValueError: naming the file and up to five values outside {0, 1, 2, 4}.
    """
    unexpected = data[~np.isin(data, LABELS)]
    if unexpected.size:
        found = np.unique(unexpected)[:5].tolist()
        hint = LABEL_3_HINT if 3 in found else ""
        raise ValueError(f"{path}: label values must be in {LABELS}, found {found}{hint}")
    return data.astype(np.uint8)


def read_label_files(
    path: Path, image_size: tuple[int, int], limits: LabelLimits | None = None
) -> np.ndarray:
    """The lesion pool of uploaded label files.

    3D files give their axial slices (last axis, as BraTS volumes are stored) that hold a lesion; 2D
    files give themselves. Each slice is resized to ``image_size`` with ``cv2.INTER_NEAREST`` (as the
    training slices are); slices whose lesion vanishes in the resize are dropped. Every file's header is
    checked (:func:`label_work`, :func:`set_work`) before any file's voxels are read.

    Args:
        path: a NIfTI file, or a directory searched recursively for ``*.nii`` / ``*.nii.gz``.
        image_size: (H, W) of the artifacts.
        limits: what the files may cost; default the process's settings' (:meth:`LabelLimits.of`).

    Returns:
        uint8 (N, H, W), N >= 1, values in ``LABELS``.

    Raises:
        ValueError: naming the file, if a file cannot be read, has values outside {0, 1, 2, 4}, is not
            2D or 3D or costs more than ``limits``; if the files together cost more than ``limits``; or if
            no file or no slice with a lesion is found.
    """
    files = label_files(Path(path))
    if not files:
        raise ValueError(f"{path}: no label files ({', '.join('*' + s for s in LABEL_SUFFIXES)})")
    limits = limits or LabelLimits.of(get_settings())
    headers = [read_file_work(file, limits) for file in files]
    try:
        set_work([work for _, work in headers], limits)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    height, width = image_size
    pool = []
    for file, (header, work) in zip(files, headers, strict=True):
        data = check_label_values(file, read_voxels(file, header, work)[0])
        volume = data[:, :, np.newaxis] if data.ndim == 2 else data
        for z in np.flatnonzero(volume.any(axis=(0, 1))):
            resized = cv2.resize(
                np.ascontiguousarray(volume[:, :, z]), (width, height), interpolation=cv2.INTER_NEAREST
            )
            if resized.any():
                pool.append(resized)
    if not pool:
        raise ValueError(f"{path}: none of the {len(files)} label files has a slice with a lesion")
    log.info("lesion source %s: %d slices with a lesion from %d files", path, len(pool), len(files))
    return np.stack(pool)


def augment(label: np.ndarray, rng: np.random.Generator, controls: LesionControls) -> np.ndarray:
    """One random flip, rotation, scaling and translation of a label (Sec. 2.8).

    Rotation and scaling are about the lesion's centroid, so that scaling does not move the lesion;
    the shift is relative to its original place. Nearest-neighbour warping keeps the label values.

    Args:
        label: uint8 (H, W) with a lesion (some pixel > 0).
        rng: the candidate's generator.
        controls: the ranges (see :class:`~worker.request.LesionControls`).

    Returns:
        uint8 (H, W), values in ``LABELS``; all zero when the lesion was shifted out of the image.
    """
    height, width = label.shape
    if controls.flip:
        flip_rows, flip_cols = rng.random(2) < 0.5
        label = label[::-1] if flip_rows else label
        label = label[:, ::-1] if flip_cols else label
    angle = rng.uniform(-controls.rotation_degrees, controls.rotation_degrees)
    scale = rng.uniform(*controls.scale)
    shift = rng.uniform(-controls.translation, controls.translation, size=2) * (width, height)
    rows, cols = np.nonzero(label)
    center = (float(cols.mean()), float(rows.mean()))
    matrix = np.asarray(cv2.getRotationMatrix2D(center, angle, scale), dtype=np.float64)
    matrix[:, 2] += shift
    return cv2.warpAffine(
        np.ascontiguousarray(label),
        matrix,
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def lesion_fits(lesion: np.ndarray, brain_mask: np.ndarray, occupied: np.ndarray | None = None) -> bool:
    """Sec. 2.5's test: the label is non-empty and every lesion pixel lies inside the brain mask.

    Args:
        lesion: (H, W) label, lesion where > 0.
        brain_mask: (H, W) bool, True inside the brain (MG's mask, binarized).
        occupied: optional (H, W) bool of pixels already taken by other lesions; they may not overlap.

    Returns:
        Whether the label can be used.
    """
    inside = lesion > 0
    if not inside.any() or (inside & ~brain_mask).any():
        return False
    return occupied is None or not (inside & occupied).any()


def fit_lesions(
    pool: np.ndarray,
    brain_mask: np.ndarray,
    rng: np.random.Generator,
    controls: LesionControls,
    max_draws: int,
) -> tuple[np.ndarray | None, int]:
    """Draw and augment pool labels until ``controls.count`` of them fit the brain without overlap.

    Args:
        pool: uint8 (N, H, W) labels with a lesion.
        brain_mask: (H, W) bool brain mask of the structural feature map.
        rng: the candidate's generator.
        controls: augmentation ranges and lesion count.
        max_draws: draws allowed in all, >= 1.

    Returns:
        (uint8 (H, W) label, draws used), or (None, max_draws) when the draws ran out.
    """
    combined = np.zeros(brain_mask.shape, dtype=np.uint8)
    placed = 0
    for draw in range(1, max_draws + 1):
        lesion = augment(pool[int(rng.integers(len(pool)))], rng, controls)
        if lesion_fits(lesion, brain_mask, combined > 0):
            combined = np.where(lesion > 0, lesion, combined)
            placed += 1
            if placed == controls.count:
                return combined, draw
    return None, max_draws
