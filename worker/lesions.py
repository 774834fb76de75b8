"""Lesion labels for synthesis: where they come from, how they are augmented and fitted (Sec. 2.5, 2.8).

A request's lesion source becomes a pool of label slices, uint8 (N, H, W) at the artifacts' image
size with a lesion in each: the artifacts' lesion library, or the axial slices with a lesion of the
label NIfTI files a user uploaded. Each draw takes a random pool label, flips, rotates, scales and
shifts it (Sec. 2.8) and keeps it only if every lesion pixel lies inside the brain mask of the
structural feature map (Sec. 2.5: "if the product of mask and selected label is 0"), re-drawing
otherwise; several lesions per sample must also not overlap.
"""

import logging
from pathlib import Path

import cv2
import numpy as np

from mrisynth.brats.read import read_nifti
from mrisynth.conventions import LABELS
from worker.request import LesionControls

log = logging.getLogger(__name__)

LABEL_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
"""File name endings read as label files in an uploaded directory."""


def _label_files(path: Path) -> list[Path]:
    if not path.exists():
        raise ValueError(f"lesion_source {path} does not exist")
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.rglob("*") if p.is_file() and p.name.endswith(LABEL_SUFFIXES) and p.name[0] != "."
    )


def _read_label(path: Path) -> np.ndarray:
    """One label file as an integer array (X, Y) or (X, Y, Z) with values in ``LABELS``."""
    data, _ = read_nifti(path)
    data = data.reshape(data.shape[:2] + tuple(n for n in data.shape[2:] if n != 1))
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: a label must be 2D (X, Y) or 3D (X, Y, Z), got shape {data.shape}")
    unexpected = np.setdiff1d(np.unique(data), LABELS)
    if unexpected.size:
        raise ValueError(f"{path}: label values must be in {LABELS}, found {unexpected[:5].tolist()}")
    return data.astype(np.uint8)


def read_label_files(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The lesion pool of uploaded label files.

    3D files give their axial slices (last axis, as BraTS volumes are stored) that hold a lesion; 2D
    files give themselves. Each slice is resized to ``image_size`` with ``cv2.INTER_NEAREST`` (as the
    training slices are); slices whose lesion vanishes in the resize are dropped.

    Args:
        path: a NIfTI file, or a directory searched recursively for ``*.nii`` / ``*.nii.gz``.
        image_size: (H, W) of the artifacts.

    Returns:
        uint8 (N, H, W), N >= 1, values in ``LABELS``.

    Raises:
        ValueError: naming the file, if a file cannot be read, has values outside {0, 1, 2, 4} or more
            than 3 dimensions; or if no file or no slice with a lesion is found.
    """
    files = _label_files(Path(path))
    if not files:
        raise ValueError(f"{path}: no label files ({', '.join('*' + s for s in LABEL_SUFFIXES)})")
    height, width = image_size
    pool = []
    for file in files:
        data = _read_label(file)
        slices = [data] if data.ndim == 2 else [data[:, :, z] for z in range(data.shape[2])]
        for label in slices:
            if label.any():
                resized = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
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
