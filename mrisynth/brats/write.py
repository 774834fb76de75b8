"""Writing one case as BraTS NIfTI files, in BraTS 2021 or 2023 naming (`mrisynth.brats.case_file`).

Writes are deterministic (the gzip streams carry no timestamp or file name, so the same arrays give the
same bytes) and atomic (a case appears complete or not at all).
"""

import gzip
import io
import shutil
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from mrisynth.brats.layouts import LABEL_KEY, LABEL_MAPS, Layout, case_file
from mrisynth.conventions import LABELS, MODALITIES

COMPRESSLEVEL = 1
"""gzip level of the written volumes (nibabel's default): level 6 saves ~15 % at 4x the time."""


def nifti_gz_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """One image as the bytes of a deterministic .nii.gz file: the one place that encodes NIfTI.

    Args:
        data: the voxels, 2D or 3D, written with their own dtype (float32 images, uint8 labels).
        affine: (4, 4) voxel-to-RAS (mm) matrix, stored as both qform and sform (code 1, scanner); the
            header's voxel sizes follow from it.

    Returns:
        gzip (level `COMPRESSLEVEL`) of the NIfTI-1 file, with mtime 0 and no embedded file name, so the
        same arrays give the same bytes.
    """
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    buffer = io.BytesIO()
    with gzip.GzipFile("", "wb", COMPRESSLEVEL, buffer, mtime=0) as stream:
        stream.write(image.to_bytes())
    return buffer.getvalue()


def _write_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write one volume as a deterministic .nii.gz (`nifti_gz_bytes`)."""
    path.write_bytes(nifti_gz_bytes(data, affine))


def encode_labels(label: np.ndarray, label_map: Mapping[int, int], what: str) -> np.ndarray:
    """Our labels {0, 1, 2, 4} as a file format's own uint8 values.

    Args:
        label: an array of our labels (`mrisynth.conventions.LABELS`), any shape.
        label_map: file value -> our value, as `LABEL_MAPS`; each of our values must appear once.
        what: the label's owner for the error message, e.g. ``case BraTS2021_00000``.

    Returns:
        uint8 array of the same shape in the file's values.

    Raises:
        ValueError: the label holds values outside `LABELS`.
    """
    bad = sorted(set(np.unique(label).tolist()) - set(LABELS))
    if bad:
        raise ValueError(f"label of {what} holds values {bad} outside {LABELS}")
    lookup = np.zeros(max(LABELS) + 1, dtype=np.uint8)
    for value, ours in label_map.items():
        lookup[ours] = value
    return lookup[np.asarray(label).astype(np.uint8)]


def write_case(
    root: Path,
    case_id: str,
    images: dict[str, np.ndarray],
    label: np.ndarray | None,
    affine: np.ndarray,
    layout: Layout = Layout.BRATS2021,
) -> Path:
    """Write one case as ``<root>/<case_id>/`` in BraTS naming, readable back by `find_cases`.

    Args:
        root: the dataset folder; created if missing.
        case_id: the case's name, e.g. ``BraTS2021_00000`` or ``BraTS-GLI-00000-000``.
        images: one (X, Y, Z) volume per modality of `MODALITIES`, e.g. (240, 240, 155); written float32.
        label: (X, Y, Z) volume in our labels {0, 1, 2, 4}, written uint8 in the layout's own values
            (BraTS 2023 writes enhancing tumor as 3); None writes no label file.
        affine: (4, 4) voxel-to-RAS (mm) matrix shared by all files.
        layout: `Layout.BRATS2021` (default) or `Layout.BRATS2023`.

    Returns:
        The case's folder. Its files are written into ``<root>/.<case_id>.partial`` and the folder is
        renamed when complete, so a failure leaves no case behind.

    Raises:
        ValueError: a modality is missing or unknown, shapes disagree, or the label holds other values.
        FileExistsError: the case folder exists already; cases are never overwritten.
    """
    if set(images) != set(MODALITIES):
        raise ValueError(f"images must have exactly the modalities {MODALITIES}, got {sorted(images)}")
    shape = np.shape(images[MODALITIES[0]])
    shapes = {key: np.shape(volume) for key, volume in images.items()}
    if label is not None:
        shapes[LABEL_KEY] = np.shape(label)
    if len(shape) != 3 or any(other != shape for other in shapes.values()):
        raise ValueError(f"expected 3D volumes of one shape, got {shapes}")
    case_dir = Path(root) / case_id
    if case_dir.exists():
        raise FileExistsError(f"{case_dir} already exists; write the dataset to a new or empty directory")
    partial = Path(root) / f".{case_id}.partial"
    files = {key: case_file(partial, case_id, key, layout) for key in shapes}
    file_label = None if label is None else encode_labels(label, LABEL_MAPS[layout], f"case {case_id}")
    shutil.rmtree(partial, ignore_errors=True)  # left by a run that crashed while writing this case
    partial.mkdir(parents=True)
    try:
        for modality in MODALITIES:
            _write_nifti(np.asarray(images[modality], dtype=np.float32), affine, files[modality])
        if file_label is not None:
            _write_nifti(file_label, affine, files[LABEL_KEY])
        partial.rename(case_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return case_dir
