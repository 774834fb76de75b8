"""Names and numbers shared by every part of mrisynth.

Modalities are always named ``t1``, ``t1ce``, ``t2``, ``flair`` (in that channel order), labels follow
BraTS 2018-2021: 0 background, 1 necrotic core, 2 edema, 4 enhancing tumor. Images are float32 and
per-image standardized as in the paper (Sec. 3.1).
"""

import numpy as np

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""Channel order of every multimodal array, (..., 4, H, W)."""

LABELS: tuple[int, ...] = (0, 1, 2, 4)
"""Valid lesion label values: background, necrotic core, edema, enhancing tumor."""

LABEL_NAMES: dict[int, str] = {0: "background", 1: "necrotic core", 2: "edema", 4: "enhancing tumor"}

BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
"""Voxel grid of a BraTS volume (x, y, axial z) at 1 mm isotropic."""

VOXEL_SIZE_MM: tuple[float, float, float] = (1.0, 1.0, 1.0)


def standardize(image: np.ndarray) -> np.ndarray:
    """Per-image standardization (paper Sec. 3.1), as TensorFlow's ``per_image_standardization``.

    Args:
        image: one image of any shape, e.g. a (H, W) axial slice.

    Returns:
        float32 array of the same shape with mean 0 and standard deviation 1; the standard deviation
        is floored at ``1/sqrt(image.size)`` so that a constant image maps to zeros instead of NaN.
    """
    x = np.asarray(image, dtype=np.float64)
    std = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return ((x - x.mean()) / std).astype(np.float32)
