"""The paper's traditional image operations: Algorithms 1, 2 and 3 (Sec. 2.2, 2.3, 2.5, 2.8).

numpy and OpenCV only, so that training (``models``) and the synthesis worker (``worker``) share them
without torch. Every function takes one image (H, W) or a stack (..., H, W) and works image by image.

Conventions:
    * Masks are 1 inside the brain. The paper's Algorithm 2 returns the complement (its ``mask`` is 1
      on the background, which is what losses (5) and (6) multiply with); that is ``1 - brain_mask``.
    * Algorithm 1 min-max normalizes each Sobel fusion map to [0, 1] before taking the mean
      difference, as the authors' code does. beta is therefore a fraction of the image's own edge
      range, and the map does not change when the input is rescaled (``a * x + b`` with a > 0): raw
      intensities, [0, 1] scaling or per-image standardization give the same map.
"""

from collections.abc import Callable

import cv2
import numpy as np

DEFAULT_BETA = 0.12
"""Algorithm 1 threshold on the normalized Sobel fusion maps (authors' default)."""

DEFAULT_EXPANSION = 5
"""Algorithm 2 expansion p in pixels (authors' default)."""

DEFAULT_MAE_THRESHOLD = 0.05
"""Algorithm 3 acceptance threshold on the MAE between the two brain masks (authors' default)."""

DEFAULT_BLUR_KSIZE = 5
"""Algorithm 3 Gaussian blur kernel: closes gaps of about two pixels in an edge line."""

DEFAULT_BLUR_LEVEL = 0.1
"""Algorithm 3 level at which the blurred map is binarized before the contour search."""


def _per_image(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to each (H, W) image of an (H, W) or (..., H, W) array."""
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"expected an image (H, W) or a stack (..., H, W), got shape {images.shape}")
    flat = images.reshape(-1, *images.shape[-2:])
    return np.stack([fn(image) for image in flat]).reshape(images.shape)


def _min_max(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant map becomes zeros."""
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def _feature_map(image: np.ndarray, beta: float) -> np.ndarray:
    x = image.astype(np.float64)
    edges = np.stack([cv2.Sobel(x, cv2.CV_64F, 0, 1, ksize=3), cv2.Sobel(x, cv2.CV_64F, 1, 0, ksize=3)])
    f1 = _min_max(edges.min(axis=0))
    f2 = _min_max(edges.max(axis=0))
    f1 = f1.mean() - f1
    f2 = f2 - f2.mean()
    return ((f1 > beta) | (f2 > beta)).astype(np.float32)


def structural_feature_map(images: np.ndarray, beta: float = DEFAULT_BETA) -> np.ndarray:
    """Algorithm 1: the binary structural feature map f of an MRI slice (Sec. 2.2).

    Sobel gives the vertical and horizontal edge maps; their pixel-wise minimum f1 and maximum f2 are
    min-max normalized, f1 = mean(f1) - f1 and f2 = f2 - mean(f2) are thresholded at beta, and f is
    their union.

    Args:
        images: (H, W) or (..., H, W) slices, any intensity scale.
        beta: threshold in (0, 1) on the normalized fusion maps; default 0.12. Lower keeps weaker edges.

    Returns:
        float32 array of the input's shape with values in {0, 1}.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must lie in (0, 1), got {beta}")
    return _per_image(lambda image: _feature_map(image, beta), images)


def _brain_mask(image: np.ndarray, expansion: int) -> np.ndarray:
    height, width = image.shape
    inside = (image > image.min()).astype(np.uint8)
    grown = cv2.resize(inside, (width + expansion, height + expansion), interpolation=cv2.INTER_NEAREST)
    top, left = expansion // 2, expansion // 2
    return grown[top : top + height, left : left + width].astype(np.float32)


def brain_mask(images: np.ndarray, expansion: int = DEFAULT_EXPANSION) -> np.ndarray:
    """Algorithm 2: the brain region of a skull-stripped slice, expanded by p pixels (Sec. 2.3).

    The brain is every pixel above the image's minimum (the constant background of skull-stripped
    BraTS, raw or standardized). The mask is resized (nearest) to (H + p, W + p) and center-cropped
    back to (H, W), which enlarges the brain about the image center.

    Args:
        images: (H, W) or (..., H, W) skull-stripped slices.
        expansion: p >= 0 in pixels; default 5, 0 leaves the brain as it is.

    Returns:
        float32 array of the input's shape, 1 inside the (expanded) brain and 0 outside.
    """
    if expansion < 0:
        raise ValueError(f"expansion p must be >= 0 pixels, got {expansion}")
    return _per_image(lambda image: _brain_mask(image, expansion), images)


def remove_lesion(feature_map: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Sec. 2.5: ``f = mask_l,x * f'``, the structural feature map without the lesion's own structure.

    ``mask_l,x`` is Algorithm 2 on the label with no expansion, i.e. 1 wherever the label is 0.

    Args:
        feature_map: f', (..., H, W) in {0, 1}.
        label: lesion label of the same shape, 0 outside the lesion.

    Returns:
        float32 f of the same shape, zero on every lesion pixel.
    """
    if feature_map.shape != label.shape:
        raise ValueError(f"feature map {feature_map.shape} and label {label.shape} must have the same shape")
    return (feature_map * (label == 0)).astype(np.float32)


def _contour_mask(feature_map: np.ndarray, blur_ksize: int, blur_level: float) -> np.ndarray:
    blurred = cv2.GaussianBlur(feature_map.astype(np.float32), (blur_ksize, blur_ksize), 0)
    binary = (blurred > blur_level).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(binary)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(np.float32)


def contour_mask(
    feature_maps: np.ndarray, blur_ksize: int = DEFAULT_BLUR_KSIZE, blur_level: float = DEFAULT_BLUR_LEVEL
) -> np.ndarray:
    """Algorithm 3's ``get_mask``: Gaussian blur, then find the closed contours and fill them (Sec. 2.8).

    A map whose brain outline is closed fills to the whole brain; one whose outline is cut open lets
    the background in and fills only to its edge lines, a hollow mask.

    Args:
        feature_maps: (H, W) or (..., H, W) structural feature maps in {0, 1}.
        blur_ksize: odd Gaussian kernel size; default 5.
        blur_level: level in (0, 1) at which the blurred map is binarized; default 0.1.

    Returns:
        float32 array of the input's shape, 1 inside the filled outer contours.
    """
    if blur_ksize < 1 or blur_ksize % 2 == 0:
        raise ValueError(f"blur_ksize must be a positive odd number, got {blur_ksize}")
    return _per_image(lambda f: _contour_mask(f, blur_ksize, blur_level), feature_maps)


def structure_mae(feature_maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Algorithm 3's score: MAE between ``contour_mask(f)`` and a given brain mask (e.g. MG's).

    Args:
        feature_maps: (H, W) or (B, H, W) structural feature maps f.
        masks: brain masks m of the same shape, 1 inside the brain.

    Returns:
        float32 MAE per image: a scalar array for (H, W), shape (B,) for a stack.
    """
    if feature_maps.shape != masks.shape:
        raise ValueError(
            f"feature maps {feature_maps.shape} and masks {masks.shape} must have the same shape"
        )
    return np.abs(contour_mask(feature_maps) - masks).mean(axis=(-2, -1)).astype(np.float32)


def accept_structure(
    feature_maps: np.ndarray, masks: np.ndarray, threshold: float = DEFAULT_MAE_THRESHOLD
) -> np.ndarray:
    """Algorithm 3's test: keep a structural feature map when MAE(get_mask(f), m) <= threshold.

    Args:
        feature_maps: (H, W) or (B, H, W) structural feature maps f.
        masks: brain masks m of the same shape.
        threshold: largest accepted MAE; default 0.05.

    Returns:
        bool per image, same leading shape as :func:`structure_mae`.
    """
    return structure_mae(feature_maps, masks) <= threshold
