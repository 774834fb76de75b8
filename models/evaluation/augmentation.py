"""The "BRATS enhanced dataset" of Sec. 3.3: real slices randomly scaled, rotated, translated and flipped.

The four registered modalities and the label of a slice get one shared random transform: a flip
(left-right and up-down, each with probability 1/2), then a rotation and a scaling about the image
center and a shift, applied with ``cv2.warpAffine`` (bilinear for images, nearest for labels, so
label values stay in ``LABELS``). Uncovered pixels take the image's background value (its minimum,
the constant outside a skull-stripped brain) and each image is standardized again (Sec. 3.1).
The paper gives no ranges; ours keep the brain inside a 96 x 96 slice (defaults of
:class:`AugmentationConfig`). :func:`worker.lesions.augment` does the same for one label about the
lesion's centroid; an image needs the center and bilinear warping, hence this module.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from mrisynth.conventions import standardize


@dataclass(frozen=True)
class AugmentationConfig:
    """Ranges of the classical augmentation.

    Attributes:
        scale: (low, high) scale factors, 0 < low <= high; default (0.9, 1.1).
        rotation_degrees: largest rotation in degrees, >= 0; default 15.
        translation: largest shift as a fraction of the image side, in [0, 1); default 0.1.
        flip: flip at random; default True.
    """

    scale: tuple[float, float] = (0.9, 1.1)
    rotation_degrees: float = 15.0
    translation: float = 0.1
    flip: bool = True

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high or self.rotation_degrees < 0 or not 0 <= self.translation < 1:
            raise ValueError(f"invalid augmentation ranges {self}")


def augment_slice(
    images: np.ndarray, label: np.ndarray, rng: np.random.Generator, config: AugmentationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One random flip, rotation, scaling and translation of a registered slice and its label.

    Args:
        images: float32 (M, H, W) registered modalities.
        label: uint8 (H, W).
        rng: the generator of the transform.
        config: the ranges.

    Returns:
        (float32 (M, H, W) standardized images, uint8 (H, W) label).
    """
    height, width = label.shape
    if config.flip:
        flip_rows, flip_cols = rng.random(2) < 0.5
        images = images[:, ::-1] if flip_rows else images
        label = label[::-1] if flip_rows else label
        images = images[:, :, ::-1] if flip_cols else images
        label = label[:, ::-1] if flip_cols else label
    angle = rng.uniform(-config.rotation_degrees, config.rotation_degrees)
    scale = rng.uniform(*config.scale)
    shift = rng.uniform(-config.translation, config.translation, size=2) * (width, height)
    matrix = np.asarray(cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale), dtype=np.float64)
    matrix[:, 2] += shift

    def warp(image: np.ndarray, interpolation: int, border: float) -> np.ndarray:
        return cv2.warpAffine(
            np.ascontiguousarray(image),
            matrix,
            (width, height),
            flags=interpolation,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border,
        )

    warped = np.stack([standardize(warp(image, cv2.INTER_LINEAR, float(image.min()))) for image in images])
    return warped, warp(label, cv2.INTER_NEAREST, 0)


def enhanced_set(
    images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator, config: AugmentationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """n augmented copies of slices drawn uniformly with replacement from a real set (Sec. 3.3).

    Args:
        images: float32 (N, M, H, W) real slices.
        labels: uint8 (N, H, W) their labels.
        n: slices to make, >= 0.
        rng: the generator of the draws and transforms.
        config: the ranges.

    Returns:
        (float32 (n, M, H, W), uint8 (n, H, W)).
    """
    pairs = [augment_slice(images[i], labels[i], rng, config) for i in rng.integers(len(labels), size=n)]
    if not pairs:
        return images[:0].astype(np.float32), labels[:0].astype(np.uint8)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
