"""Registration of the synthetic modalities: do the four images of a sample share one anatomy?

The paper's claim is *registered* multimodal MRI: every modality is decoded from one fused map
(Sec. 2.6), and loss (17) asks their structural feature maps to agree. We measure it with Algorithm 1
(:func:`mrisynth.structure.structural_feature_map`, the artifacts' beta) and the Dice of binary maps:

* between modalities: the mean Dice of the 6 pairs of a sample's four Algorithm 1 maps;
* with the input: the mean Dice of each modality's map with the structural feature map f the sample
  was synthesized from (Fig. 7);
* two references: the same between-modality Dice on real registered slices (the real test split),
  and on *unpaired* synthetic modalities (modality i of sample k with modality j of sample k + 1), the
  value of images that share no anatomy.

Edge maps are one or two pixels wide, so a shift of one pixel already costs much of the Dice; the
references tell what the numbers mean.
"""

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from models.evaluation.metrics import dice
from mrisynth.structure import structural_feature_map

MODALITY_PAIRS: tuple[tuple[int, int], ...] = tuple(combinations(range(4), 2))
"""The 6 unordered modality pairs (i, j), i < j."""


@dataclass(frozen=True)
class RegistrationResult:
    """Mean Dice of Algorithm 1 maps (module docstring).

    Attributes:
        synthetic_between: between the modalities of a synthetic sample.
        synthetic_with_input: between each synthetic modality and the input map f.
        real_between: between the modalities of a real slice.
        unpaired_between: between modalities of different synthetic samples.
        samples: synthetic samples scored.
    """

    synthetic_between: float
    synthetic_with_input: float
    real_between: float
    unpaired_between: float
    samples: int


def between_modalities(maps: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """Dice of the 6 modality pairs of each sample's maps.

    Args:
        maps: (N, 4, H, W) binary maps.
        others: optional (N, 4, H, W) maps to take modality j from (default ``maps``).

    Returns:
        float64 (N, 6), pairs in :data:`MODALITY_PAIRS` order.
    """
    others = maps if others is None else others
    return np.stack([dice(maps[:, i], others[:, j]) for i, j in MODALITY_PAIRS], axis=1)


def registration(
    synthetic_images: np.ndarray, synthetic_f: np.ndarray, real_images: np.ndarray, beta: float
) -> RegistrationResult:
    """Registration Dice of synthetic samples, with the real and unpaired references.

    Args:
        synthetic_images: float32 (N, 4, H, W), N >= 2.
        synthetic_f: (N, H, W) the input structural feature maps.
        real_images: float32 (N', 4, H, W) real registered slices.
        beta: Algorithm 1 threshold (the manifest's).
    """
    if len(synthetic_images) < 2:
        raise ValueError("registration needs >= 2 synthetic samples (one for the unpaired reference)")
    maps = structural_feature_map(synthetic_images, beta)
    real_maps = structural_feature_map(real_images, beta)
    with_input = dice(maps, np.broadcast_to(synthetic_f[:, None], maps.shape))
    return RegistrationResult(
        synthetic_between=float(between_modalities(maps).mean()),
        synthetic_with_input=float(with_input.mean()),
        real_between=float(between_modalities(real_maps).mean()),
        unpaired_between=float(between_modalities(maps, np.roll(maps, -1, axis=0)).mean()),
        samples=len(maps),
    )
