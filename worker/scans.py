"""Uploaded scans: one case's registered modalities (and optionally its lesion label) as NIfTI files.

A scan set is a folder of ``<key>.nii`` or ``<key>.nii.gz`` files, one per key of :data:`SCAN_KEYS`: at
least one modality, and ``seg``, the scan's own lesion label (values in {0, 1, 2, 4}), when it has a
tumour to be removed from its structure (Sec. 2.5). Every file is 2D (X, Y), one axial slice, or 3D
(X, Y, Z), axial slices along the last axis as BraTS stores them.

Reading costs are bounded from the headers before a voxel is read, with the lesion sets' own checks and
limits (:func:`worker.lesions.read_file_work`, :func:`worker.lesions.set_work`): the files of a scan set
together count against ``max_lesion_set_slices`` and ``max_lesion_set_voxels``. Then the files must agree:
one shape, one affine (within :data:`AFFINE_TOLERANCE_MM`), finite voxels.

The networks work on axial slices at the artifacts' size S: :func:`scan_slices` standardizes each slice
and resizes it as training does, :func:`to_grid` resizes results back to the scan's (X, Y).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mrisynth.conventions import MODALITIES
from mrisynth.settings import get_settings
from mrisynth.structure import brain_mask
from worker.lesions import (
    LABEL_SUFFIXES,
    LabelLimits,
    check_label_values,
    read_file_work,
    read_voxels,
    set_work,
)
from worker.translation import prepare_slices

LABEL_FILE_KEY = "seg"
"""Key of the scan's own lesion label file."""

SCAN_KEYS: tuple[str, ...] = (*MODALITIES, LABEL_FILE_KEY)
"""File keys of a scan set: the modalities, then the label."""

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference between two files' affine entries for them to be registered (same grid)."""


@dataclass(frozen=True, eq=False)
class Scan:
    """One uploaded case, on its own grid.

    Attributes:
        images: modality -> float32 (X, Y, Z) voxels as uploaded (Z = 1 for a 2D file).
        label: uint8 (X, Y, Z) the scan's own lesion label, or None.
        affine: (4, 4) voxel-to-world affine shared by every file.
        shape: the files' shape as uploaded, (X, Y) or (X, Y, Z).
    """

    images: dict[str, np.ndarray]
    label: np.ndarray | None
    affine: np.ndarray
    shape: tuple[int, ...]

    @property
    def modalities(self) -> tuple[str, ...]:
        """The given modalities, in ``MODALITIES`` order."""
        return tuple(m for m in MODALITIES if m in self.images)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the volumes (Z = 1 for a 2D scan)."""
        return next(iter(self.images.values())).shape

    def restore(self, volume: np.ndarray) -> np.ndarray:
        """An (X, Y, Z) volume in the uploaded shape ((X, Y) for a 2D scan)."""
        return volume.reshape(self.shape)


def nifti_stem(name: str) -> str:
    """A file name without its ``.nii`` or ``.nii.gz`` ending; ``""`` for a name with neither."""
    return next((name.removesuffix(suffix) for suffix in LABEL_SUFFIXES[::-1] if name.endswith(suffix)), "")


def scan_set_files(folder: Path) -> dict[str, Path]:
    """The files of a scan set folder, by key, in :data:`SCAN_KEYS` order.

    Raises:
        ValueError: a file is not named ``<key>.nii[.gz]`` of a known key, or a key has two files.
    """
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        key = nifti_stem(path.name)
        if key not in SCAN_KEYS:
            raise ValueError(f"{path.name}: scan files are named <key>.nii or <key>.nii.gz, keys {SCAN_KEYS}")
        if key in found:
            raise ValueError(f"{found[key].name} and {path.name}: two files of key {key}; keep one")
        found[key] = path
    return {key: found[key] for key in SCAN_KEYS if key in found}


def read_scan(files: Mapping[str, Path], limits: LabelLimits | None = None) -> Scan:
    """Read and check a scan's files (module docstring).

    Args:
        files: key of :data:`SCAN_KEYS` -> file; at least one modality.
        limits: what the files may cost together; default the settings' lesion-set limits.

    Returns:
        The scan.

    Raises:
        ValueError: naming the key (``t1: ...``) of a file that is unreadable, over the limits, of another
            shape or affine than the first, with NaN or infinite voxels, or (``seg``) with label values
            outside {0, 1, 2, 4}; ``files`` for an unknown key, no modality or the set's total.
    """
    unknown = sorted(set(files) - set(SCAN_KEYS))
    if unknown or not set(files) & set(MODALITIES):
        raise ValueError(
            f"files: give at least one of {MODALITIES} (and optionally seg), got {sorted(files)}"
        )
    limits = limits or LabelLimits.of(get_settings())
    keys = [key for key in SCAN_KEYS if key in files]
    checked = {}
    for key in keys:
        try:
            checked[key] = read_file_work(files[key], limits)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from error
    try:
        set_work([work for _, work in checked.values()], limits)
    except ValueError as error:
        raise ValueError(f"files: {error}") from error
    volumes: dict[str, np.ndarray] = {}
    first_affine: np.ndarray | None = None
    for key in keys:
        header, work = checked[key]
        try:
            data, affine = read_voxels(files[key], header, work)
            label = check_label_values(files[key], data) if key == LABEL_FILE_KEY else None
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from error
        reference = volumes[keys[0]].shape if volumes else data.shape
        if data.shape != reference:
            raise ValueError(f"{key}: shape {data.shape}, not the {reference} of {keys[0]}")
        if first_affine is not None and not np.allclose(affine, first_affine, atol=AFFINE_TOLERANCE_MM):
            raise ValueError(f"{key}: its affine differs from {keys[0]}'s; the files must be registered")
        first_affine = affine if first_affine is None else first_affine
        if label is not None:
            volumes[key] = label
        else:
            volumes[key] = np.asarray(data, dtype=np.float32)
            if not np.isfinite(volumes[key]).all():
                raise ValueError(f"{key}: {int((~np.isfinite(volumes[key])).sum())} NaN or infinite voxels")
    assert first_affine is not None  # at least one file
    shape = tuple(int(n) for n in checked[keys[0]][0].get_data_shape())
    grid = {key: volume.reshape(*volume.shape[:2], -1) for key, volume in volumes.items()}
    return Scan(images=grid, label=grid.pop(LABEL_FILE_KEY, None), affine=first_affine, shape=shape)


def read_scan_set(folder: Path, limits: LabelLimits | None = None) -> Scan:
    """:func:`read_scan` of a scan set folder's files (:func:`scan_set_files`)."""
    return read_scan(scan_set_files(folder), limits)


def scan_slices(scan: Scan, size: int) -> dict[str, np.ndarray]:
    """The scan's axial slices as the networks take them (:func:`worker.translation.prepare_slices`).

    Returns:
        modality -> float32 (Z, S, S), S = ``size``.
    """
    return {m: prepare_slices(np.moveaxis(volume, 2, 0), size) for m, volume in scan.images.items()}


def scan_brain(scan: Scan) -> np.ndarray:
    """bool (X, Y, Z): Algorithm 2 without expansion on the scan's grid, the union over its modalities
    (every voxel above its slice's background in some modality)."""
    slices = np.stack([np.moveaxis(volume, 2, 0) for volume in scan.images.values()])
    return np.moveaxis(brain_mask(slices, expansion=0).max(axis=0) > 0, 0, 2)


def to_grid(slices: np.ndarray, grid: tuple[int, int], label: bool = False) -> np.ndarray:
    """(Z, S, S) slices at the artifacts' size back on the scan's (X, Y): (X, Y, Z).

    Images are resized linearly (float32), labels with nearest neighbours (uint8).
    """
    interpolation = cv2.INTER_NEAREST if label else cv2.INTER_LINEAR
    dtype = np.uint8 if label else np.float32
    height, width = grid
    resized = [
        cv2.resize(np.ascontiguousarray(s, dtype=dtype), (width, height), interpolation=interpolation)
        for s in slices
    ]
    return np.stack(resized, axis=2).astype(dtype)
