"""Maximum mean discrepancy between real and synthetic images, on download-free image features.

MMD (Gretton et al. 2012, "A kernel two-sample test", JMLR 13) is the distance between the kernel mean
embeddings of two samples; KID (Binkowski et al. 2018) is its unbiased estimate on Inception features.
We use no downloaded network; each image of one modality is described by :data:`FEATURES` numbers:

* the brain's intensity distribution: the 5, 10, ..., 95 % quantiles of the standardized intensities
  inside the brain (19 values; contrast and the share of bright and dark tissue, lesions included);
* texture at three scales: the mean absolute value of the first three Laplacian-pyramid bands
  (:func:`models.evaluation.swd.laplacian_pyramid`) inside the image (3 values).

Features are standardized with the mean and standard deviation of the **reference** set (the real
training slices), so that every feature weighs alike, then compared with the Gaussian (RBF) kernel
``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))``, sigma by the median heuristic: the median of the
pairwise distances of the reference features (Gretton et al., Sec. 8). The estimate is the unbiased
U-statistic MMD^2_u of Gretton et al.'s Lemma 6 (diagonal terms left out), which is 0 in expectation
for two samples of one distribution and can be slightly negative. The report gives it for synthetic
against real training slices, and for the real held-out slices against the same reference: the value
of new real data.
"""

from dataclasses import dataclass

import numpy as np

from models.evaluation.swd import laplacian_pyramid
from mrisynth.conventions import MODALITIES

QUANTILES: tuple[float, ...] = tuple(q / 100 for q in range(5, 100, 5))
"""Quantiles of the brain intensities."""

TEXTURE_LEVELS = 3
"""Laplacian bands whose mean absolute value is a feature."""

FEATURES = len(QUANTILES) + TEXTURE_LEVELS
"""Features per image."""

MAX_IMAGES = 1000
"""Images per set at most (a seeded subsample beyond), to bound the O(N^2) kernel matrices."""


def image_features(images: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The features of the module docstring.

    Args:
        images: float (N, H, W) images of one modality.
        brain: (N, H, W) brain masks, nonzero inside; an image with an empty mask uses all its pixels.

    Returns:
        float64 (N, FEATURES).
    """
    if images.shape != brain.shape or images.ndim != 3:
        raise ValueError(f"images and brain masks must both be (N, H, W), got {images.shape}, {brain.shape}")
    rows = []
    for image, mask in zip(images, brain > 0, strict=True):
        inside = image[mask] if mask.any() else image.ravel()
        bands = laplacian_pyramid(image.astype(np.float32), TEXTURE_LEVELS + 1)[:TEXTURE_LEVELS]
        rows.append([*np.quantile(inside, QUANTILES), *(float(np.abs(band).mean()) for band in bands)])
    return np.asarray(rows, dtype=np.float64)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """Median heuristic: the median of the pairwise Euclidean distances of distinct rows of x (N >= 2)."""
    if len(x) < 2:
        raise ValueError("the median heuristic needs >= 2 points")
    distances = np.sqrt(_squared_distances(x, x)[np.triu_indices(len(x), k=1)])
    median = float(np.median(distances))
    return median if median > 0 else 1.0


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Unbiased MMD^2 with the Gaussian kernel of width sigma (Gretton et al. 2012, Lemma 6).

    ``1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j) - 2/(mn) sum_{i,j} k(x_i, y_j)``.

    Args:
        x: float (m, F), m >= 2.
        y: float (n, F), n >= 2.
        sigma: kernel width, > 0.
    """
    if len(x) < 2 or len(y) < 2 or x.shape[1:] != y.shape[1:] or sigma <= 0:
        raise ValueError(
            f"need two sets of >= 2 points of one dimension and sigma > 0, got {x.shape}, {y.shape}"
        )
    gamma = 1.0 / (2 * sigma**2)
    kxx, kyy = np.exp(-gamma * _squared_distances(x, x)), np.exp(-gamma * _squared_distances(y, y))
    kxy = np.exp(-gamma * _squared_distances(x, y))
    m, n = len(x), len(y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


@dataclass(frozen=True)
class MmdResult:
    """MMD^2_u per modality against the reference set (the real training slices).

    Attributes:
        synthetic: ``{modality: MMD^2_u}`` of the synthetic images.
        real: ``{modality: MMD^2_u}`` of the real held-out slices.
        sigma: ``{modality: kernel width}`` in standardized feature units.
    """

    synthetic: dict[str, float]
    real: dict[str, float]
    sigma: dict[str, float]


def _subsample(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, MAX_IMAGES, replace=False)) if n > MAX_IMAGES else np.arange(n)


def mmd_by_modality(
    reference: tuple[np.ndarray, np.ndarray],
    real: tuple[np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> MmdResult:
    """MMD^2_u of the held-out real and the synthetic images against the reference, per modality.

    Args:
        reference: (float32 (N, 4, H, W) images, (N, H, W) brain masks), the real training slices.
        real: the real held-out (images, brain masks).
        synthetic: the synthetic (images, brain masks).
        seed: seed of the subsamples of sets larger than :data:`MAX_IMAGES`.
    """
    synthetic_mmd, real_mmd, sigmas = {}, {}, {}
    rng = np.random.default_rng([seed, 3])
    picks = [_subsample(len(pair[0]), rng) for pair in (reference, real, synthetic)]
    for j, modality in enumerate(MODALITIES):
        ref, held, syn = (
            image_features(pair[0][rows, j], pair[1][rows])
            for pair, rows in zip((reference, real, synthetic), picks, strict=True)
        )
        mean, sd = ref.mean(axis=0), np.maximum(ref.std(axis=0), 1e-8)
        ref, held, syn = ((features - mean) / sd for features in (ref, held, syn))
        sigma = median_bandwidth(ref)
        sigmas[modality] = sigma
        synthetic_mmd[modality] = mmd2_unbiased(syn, ref, sigma)
        real_mmd[modality] = mmd2_unbiased(held, ref, sigma)
    return MmdResult(synthetic_mmd, real_mmd, sigmas)
