"""Realism and diversity of the synthetic images, per modality, without a downloaded feature extractor.

* Realism: the sliced Wasserstein distance (:mod:`models.evaluation.swd`) between the Laplacian-pyramid
  patches of the synthetic images and of the real training slices, beside the same distance between
  the real test slices and the real training slices: other subjects of the same distribution, the
  distance that new real data would score (with the test split's few subjects, an upper bound of it).
* Diversity: the mean MS-SSIM of random pairs of synthetic samples, beside that of random pairs of real
  training slices (lower: more diverse). Mode collapse shows as a synthetic MS-SSIM above the real one.
* Distinct modalities: the mean MS-SSIM between the four modalities of one sample (its 6 pairs),
  synthetic beside real test slices. Registered modalities share the anatomy but not the contrast;
  a synthetic value near 1 means the decoder draws one image four times.
"""

from dataclasses import dataclass

import numpy as np

from models.evaluation.metrics import mean_pairwise_ms_ssim, ms_ssim
from models.evaluation.registration import MODALITY_PAIRS
from models.evaluation.swd import SwdConfig, swd_per_level
from mrisynth.conventions import MODALITIES


@dataclass(frozen=True)
class RealismConfig:
    """Settings of the realism and diversity scores.

    Attributes:
        swd: the SWD settings.
        pairs: random pairs of the MS-SSIM means, >= 1; default 200.
    """

    swd: SwdConfig = SwdConfig()
    pairs: int = 200


@dataclass(frozen=True)
class RealismResult:
    """Scores per modality (keys of ``MODALITIES``).

    Attributes:
        swd_synthetic: SWD x 1e3 per pyramid level (finest first) between synthetic and real training.
        swd_real: SWD x 1e3 per level between real test and real training.
        ms_ssim_synthetic: mean MS-SSIM among synthetic samples.
        ms_ssim_real: mean MS-SSIM among real training slices.
        modalities_synthetic: mean MS-SSIM between the modalities of a synthetic sample.
        modalities_real: mean MS-SSIM between the modalities of a real test slice.
    """

    swd_synthetic: dict[str, list[float]]
    swd_real: dict[str, list[float]]
    ms_ssim_synthetic: dict[str, float]
    ms_ssim_real: dict[str, float]
    modalities_synthetic: float
    modalities_real: float


def between_modalities_ms_ssim(images: np.ndarray) -> float:
    """Mean MS-SSIM over the 6 modality pairs of every sample of (N, 4, H, W) images."""
    return float(np.mean([ms_ssim(sample[i], sample[j]) for sample in images for i, j in MODALITY_PAIRS]))


def realism(
    synthetic: np.ndarray, real_train: np.ndarray, real_test: np.ndarray, config: RealismConfig, seed: int
) -> RealismResult:
    """SWD and MS-SSIM of each modality (module docstring).

    Args:
        synthetic: float32 (N, 4, H, W) synthetic samples, N >= 2.
        real_train: float32 (N', 4, H, W) real training slices, N' >= 2.
        real_test: float32 (N'', 4, H, W) real test slices.
        config: the settings.
        seed: seed of the patches, directions and pairs.
    """
    swd_synthetic, swd_real, ms_ssim_synthetic, ms_ssim_real = {}, {}, {}, {}
    for j, modality in enumerate(MODALITIES):
        swd_synthetic[modality] = [
            1e3 * d for d in swd_per_level(synthetic[:, j], real_train[:, j], config.swd, seed)
        ]
        swd_real[modality] = [
            1e3 * d for d in swd_per_level(real_test[:, j], real_train[:, j], config.swd, seed)
        ]
        pairs = np.random.default_rng([seed, j])
        ms_ssim_synthetic[modality] = mean_pairwise_ms_ssim(synthetic[:, j], config.pairs, pairs)
        pairs = np.random.default_rng([seed, j])
        ms_ssim_real[modality] = mean_pairwise_ms_ssim(real_train[:, j], config.pairs, pairs)
    return RealismResult(
        swd_synthetic,
        swd_real,
        ms_ssim_synthetic,
        ms_ssim_real,
        between_modalities_ms_ssim(synthetic),
        between_modalities_ms_ssim(real_test),
    )
