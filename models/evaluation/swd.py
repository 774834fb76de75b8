"""Sliced Wasserstein distance between Laplacian-pyramid patches of two image sets (Karras et al. 2018).

The realism score of progressive GAN (Karras et al., "Progressive growing of GANs", Sec. 5 and their
``metrics/sliced_wasserstein.py``), without any downloaded feature extractor:

1. each image's Laplacian pyramid (OpenCV's ``pyrDown`` / ``pyrUp``), from full size down to the
   coarsest level at least ``min_size`` pixels wide (16 in Karras et al.), whose last level is the
   Gaussian residue;
2. at every level, ``descriptors`` 7 x 7 patches at random images and positions of each set; the
   positions come from one seeded generator, so two identical sets give identical descriptors;
3. each set's descriptors normalized per level to mean 0 and standard deviation 1 (over its own
   patches, as Karras et al. do), flattened to 49-vectors;
4. the sliced Wasserstein distance: project both sets on ``directions`` random unit vectors, sort
   each projection, take the mean absolute difference of the sorted values; the mean over
   ``repeats`` draws of directions.

Karras et al. report it times 1e3; so does the report. 0 means the patch distributions match.
"""

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SwdConfig:
    """Settings of the SWD (defaults: Karras et al.'s, but for the number of patches).

    Attributes:
        patch: side of the square patches, odd, default 7.
        descriptors: patches per set and level, default 16384 (Karras et al. take 128 per image of
            8192 images; our sets are hundreds of images).
        directions: random projection directions per repeat, default 128.
        repeats: draws of directions averaged, default 4.
        min_size: smallest pyramid level side in pixels, default 16.
    """

    patch: int = 7
    descriptors: int = 16384
    directions: int = 128
    repeats: int = 4
    min_size: int = 16

    def __post_init__(self) -> None:
        if self.patch < 1 or self.patch % 2 == 0:
            raise ValueError(f"patch must be a positive odd number, got {self.patch}")
        if min(self.descriptors, self.directions, self.repeats, self.min_size) < 1:
            raise ValueError("descriptors, directions, repeats and min_size must be >= 1")


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid of a (H, W) image: ``levels`` float32 bands, full size first, Gaussian residue last.

    Band k is ``G_k - pyrUp(G_k+1)`` with ``G_k+1 = pyrDown(G_k)``; the sum of the upsampled bands
    gives the image back.
    """
    gaussian: list[np.ndarray] = [np.asarray(image, dtype=np.float32)]
    for _ in range(levels - 1):
        gaussian.append(cv2.pyrDown(gaussian[-1]))
    bands = [
        fine - cv2.pyrUp(coarse, dstsize=(fine.shape[1], fine.shape[0]))
        for fine, coarse in zip(gaussian[:-1], gaussian[1:], strict=True)
    ]
    return [*bands, gaussian[-1]]


def pyramid_levels(size: int, min_size: int) -> int:
    """Levels of the pyramid of an image of side ``size`` whose coarsest level is >= ``min_size``."""
    levels = 1
    while (size >> levels) >= min_size:
        levels += 1
    return levels


def _descriptors(
    pyramids: list[list[np.ndarray]], level: int, config: SwdConfig, rng: np.random.Generator
) -> np.ndarray:
    """``config.descriptors`` normalized patches (D, patch * patch) of one level of a set's pyramids."""
    height, width = pyramids[0][level].shape
    half = config.patch // 2
    if min(height, width) < config.patch:
        raise ValueError(f"level {level} ({height} x {width}) is smaller than the patch {config.patch}")
    images = rng.integers(len(pyramids), size=config.descriptors)
    rows = rng.integers(half, height - half, size=config.descriptors)
    cols = rng.integers(half, width - half, size=config.descriptors)
    band = np.stack([pyramid[level] for pyramid in pyramids])
    offsets = np.arange(-half, half + 1)
    patches = band[
        images[:, None, None], rows[:, None, None] + offsets[None, :, None], cols[:, None, None] + offsets
    ]
    patches = patches - patches.mean()
    patches = patches / max(float(patches.std()), 1e-8)
    return patches.reshape(config.descriptors, -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, config: SwdConfig, rng: np.random.Generator) -> float:
    """Sliced Wasserstein distance between two descriptor sets of equal size (D, F)."""
    if a.shape != b.shape:
        raise ValueError(f"descriptor sets must have the same shape, got {a.shape} and {b.shape}")
    distances = []
    for _ in range(config.repeats):
        directions = rng.standard_normal((a.shape[1], config.directions))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        projected_a = np.sort(a @ directions, axis=0)
        projected_b = np.sort(b @ directions, axis=0)
        distances.append(np.abs(projected_a - projected_b).mean())
    return float(np.mean(distances))


def swd_per_level(a: np.ndarray, b: np.ndarray, config: SwdConfig, seed: int) -> list[float]:
    """SWD between the Laplacian-pyramid patches of two image sets, one value per level, finest first.

    Args:
        a: (N, H, W) images.
        b: (N', H, W) images of the same size.
        config: patch, descriptor and projection settings.
        seed: seed of the patch positions (the same for both sets) and of the directions.

    Returns:
        One SWD per level (not yet times 1e3), ``pyramid_levels(min(H, W), config.min_size)`` values.
    """
    if a.shape[1:] != b.shape[1:] or a.ndim != 3 or not len(a) or not len(b):
        raise ValueError(f"need two non-empty (N, H, W) sets of one image size, got {a.shape}, {b.shape}")
    levels = pyramid_levels(min(a.shape[1:]), config.min_size)
    pyramids_a = [laplacian_pyramid(image, levels) for image in a]
    pyramids_b = [laplacian_pyramid(image, levels) for image in b]
    result = []
    for level in range(levels):
        descriptors_a = _descriptors(pyramids_a, level, config, np.random.default_rng([seed, level, 0]))
        descriptors_b = _descriptors(pyramids_b, level, config, np.random.default_rng([seed, level, 0]))
        directions = np.random.default_rng([seed, level, 1])
        result.append(sliced_wasserstein(descriptors_a, descriptors_b, config, directions))
    return result
