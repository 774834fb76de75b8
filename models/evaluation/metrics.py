"""Per-image scores of the evaluation: Dice and MSE of segmentations (Sec. 3.4), and MS-SSIM.

Dice (Dice 1945, the paper's [5]) is the **whole-tumor** Dice, lesion = label > 0, as the worker's
lesion filter scores synthetic samples, with the same function (:func:`worker.filters.dice`): one
number per 2D image, 1.0 when both masks are empty. MSE (the paper's [19]) is the squared error of
loss (19), the mean over pixels and label channels of ``(onehot(label) - probabilities) ** 2``. The
paper averages both over the 2D test images and the four modalities (Sec. 3.4);
:func:`segmentation_scores` returns them per image and modality so that the callers can average, and
plot, as they need.

MS-SSIM (Wang, Simoncelli and Bovik 2003) measures how alike two images are at five scales; the mean
MS-SSIM over pairs of samples of one set is the diversity score of Odena et al. and of Karras et al.
(lower is more diverse). Written here on OpenCV's Gaussian blur, as no installed library has it
(scikit-image, which has SSIM only, is not a dependency).
"""

import cv2
import numpy as np

from mrisynth.conventions import LABELS
from worker.filters import dice

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Exponents of the five scales of Wang et al. (2003), finest first."""

SSIM_WINDOW = 11
"""Side of the Gaussian window of SSIM (Wang et al.)."""

SSIM_SIGMA = 1.5
"""Standard deviation of that window (Wang et al.)."""


def onehot(labels: np.ndarray) -> np.ndarray:
    """Labels (..., H, W), values in ``LABELS`` -> float32 (..., 4, H, W), channels in ``LABELS`` order."""
    return np.stack([labels == value for value in LABELS], axis=-3).astype(np.float32)


def segmentation_scores(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-tumor Dice and MSE of each modality's segmentation of each image (Table 1 and 2 scores).

    Args:
        probabilities: float32 (N, M, 4, H, W), softmax over ``LABELS`` of the segmentor of each of
            M modalities.
        labels: (N, H, W) true labels, values in ``LABELS``.

    Returns:
        (Dice, MSE), each float64 (N, M). The predicted label is the argmax; Dice compares its lesion
        (label > 0) with the true one; MSE is the mean of ``(onehot(label) - probabilities) ** 2``.
    """
    if probabilities.ndim != 5 or probabilities.shape[2] != len(LABELS):
        raise ValueError(f"probabilities must be (N, M, {len(LABELS)}, H, W), got {probabilities.shape}")
    if labels.shape != (probabilities.shape[0], *probabilities.shape[3:]):
        raise ValueError(f"labels {labels.shape} do not match probabilities {probabilities.shape}")
    predicted_lesion = probabilities.argmax(axis=2) > 0
    true_lesion = np.broadcast_to((labels > 0)[:, None], predicted_lesion.shape)
    target = onehot(labels)[:, None]
    mse = np.square(target - probabilities).mean(axis=(-3, -2, -1), dtype=np.float64)
    return dice(true_lesion, predicted_lesion), mse


def ms_ssim_scales(size: int, window: int = SSIM_WINDOW) -> int:
    """Scales of MS-SSIM that fit an image of side ``size``: at most 5, each at least ``window`` wide.

    Wang et al. use 5 scales on images of 176 pixels or more; smaller images (96 in the demo) drop the
    coarsest scales, whose exponents are then spread over the others (:func:`ms_ssim`).
    """
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and size // 2**scales >= window:
        scales += 1
    if scales == 0:
        raise ValueError(f"images of side {size} are smaller than the SSIM window {window}")
    return scales


def _unit_range(image: np.ndarray) -> np.ndarray:
    """Min-max scale a (H, W) image to [0, 1] (SSIM's constants assume a known dynamic range)."""
    x = image.astype(np.float64)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def _ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean luminance and contrast-structure terms of SSIM over the valid (unpadded) window positions."""
    c1, c2 = 0.01**2, 0.03**2

    def blur(image: np.ndarray) -> np.ndarray:
        half = SSIM_WINDOW // 2
        blurred = cv2.GaussianBlur(image, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA)
        return blurred[half:-half, half:-half] if half else blurred

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    covariance = blur(x * y) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * covariance + c2) / (var_x + var_y + c2)
    return float(luminance.mean()), float(contrast_structure.mean())


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two (H, W) images, each min-max scaled to [0, 1] first.

    Gaussian window 11, sigma 1.5, constants K1 0.01 and K2 0.03, 2 x 2 average downsampling between
    scales (Wang et al. 2003). Images smaller than 176 pixels use :func:`ms_ssim_scales` scales with
    the first exponents renormalized to sum 1. Negative terms are clipped at 0, as in common
    implementations, so that fractional powers stay real.

    Returns:
        MS-SSIM in [0, 1]; 1.0 for identical images.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (H, W) images of one shape, got {a.shape} and {b.shape}")
    scales = ms_ssim_scales(min(a.shape))
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    x, y = _unit_range(a), _unit_range(b)
    score = 1.0
    for scale, weight in enumerate(weights):
        luminance, contrast_structure = _ssim_terms(x, y)
        term = contrast_structure if scale < scales - 1 else luminance * contrast_structure
        score *= max(term, 0.0) ** weight
        half = (x.shape[1] // 2, x.shape[0] // 2)
        x = cv2.resize(x, half, interpolation=cv2.INTER_AREA)
        y = cv2.resize(y, half, interpolation=cv2.INTER_AREA)
    return float(score)


def mean_pairwise_ms_ssim(images: np.ndarray, pairs: int, rng: np.random.Generator) -> float:
    """Mean MS-SSIM over random pairs of distinct images of a set: the set's (lack of) diversity.

    Args:
        images: (N, H, W) images, N >= 2.
        pairs: pairs (i, j), i != j, drawn uniformly with replacement, >= 1.
        rng: the generator of the pairs.

    Returns:
        The mean, in [0, 1]; 1.0 when all images are the same.
    """
    if len(images) < 2 or pairs < 1:
        raise ValueError(f"need >= 2 images and >= 1 pair, got {len(images)} images and {pairs} pairs")
    first = rng.integers(len(images), size=pairs)
    second = (first + rng.integers(1, len(images), size=pairs)) % len(images)
    return float(np.mean([ms_ssim(images[i], images[j]) for i, j in zip(first, second, strict=True)]))
