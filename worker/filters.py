"""The numpy side of synthesis: the fusion map (Sec. 2.5) and the lesion filter (Sec. 2.8).

The fusion map is the twin of :func:`models.fusion.fuse`, with the weights read from the manifest
(0.2 and 0.8). The lesion filter scores a synthetic sample by the **whole-tumor Dice** (lesion =
label > 0) between the input label and each requested modality's segmentation, averaged over the
modalities: whole tumor is the region every modality is trained to show, it is BraTS's primary
region, and it does not collapse to 0 on the small sub-regions (necrosis, enhancing tumor) that a
96 x 96 slice may hold a handful of pixels of. Algorithm 3, the structure filter, is
:func:`mrisynth.structure.structure_mae`.
"""

import numpy as np

from mrisynth.artifacts import FusionWeights
from mrisynth.conventions import LABELS


def fuse(f: np.ndarray, label: np.ndarray, weights: FusionWeights) -> np.ndarray:
    """The fusion map of Sec. 2.5, input of EC_r: ``label_weight * onehot_c + structure_weight * f``.

    Args:
        f: structural feature maps (B, H, W) in {0, 1}.
        label: lesion labels (B, H, W) with values in ``LABELS``.
        weights: the manifest's fusion weights.

    Returns:
        float32 (B, 4, H, W), channel c for label value ``LABELS[c]``.

    Raises:
        ValueError: if the shapes differ or a label value is not in ``LABELS``.
    """
    if f.shape != label.shape or f.ndim != 3:
        raise ValueError(f"f and label must both be (B, H, W), got {f.shape} and {label.shape}")
    onehot = np.stack([label == value for value in LABELS], axis=1).astype(np.float32)
    if not (onehot.sum(axis=1) == 1).all():
        raise ValueError(f"label values must be in {LABELS}")
    structure = weights.structure_weight * f[:, None].astype(np.float32)
    return (weights.label_weight * onehot + structure).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice of masks, image by image: ``2 |a & b| / (|a| + |b|)``, 1.0 where both are empty.

    The lesion filter's and ``mrisynth evaluate``'s (:mod:`models.evaluation.metrics`).

    Args:
        a: (..., H, W) masks; nonzero is inside.
        b: masks of the same shape.

    Returns:
        float64 (...), one Dice per image, in [0, 1].
    """
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    inside_a, inside_b = a != 0, b != 0
    overlap = (inside_a & inside_b).sum(axis=(-2, -1))
    total = inside_a.sum(axis=(-2, -1)) + inside_b.sum(axis=(-2, -1))
    return np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), 1.0)


def whole_tumor_dice(label: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Dice of the whole tumor (label > 0) between input labels and segmentations.

    Args:
        label: (B, H, W) input labels.
        predicted: (B, M, H, W) segmentations, one per modality.

    Returns:
        float64 (B, M); 1.0 where both are empty (the healthy-brain convention), 0.0 where only one is.
    """
    return dice(np.broadcast_to((label > 0)[:, None], predicted.shape), predicted > 0)


def accept_lesion(
    label: np.ndarray, predicted: np.ndarray, dice_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sec. 2.8's lesion filter for samples with a lesion: mean whole-tumor Dice >= the threshold.

    Args:
        label: (B, H, W) input labels.
        predicted: (B, M, H, W) segmentations of the M requested modalities.
        dice_threshold: smallest accepted mean Dice, e.g. the paper's 0.95.

    Returns:
        (bool (B,) accepted, float64 (B, M) Dice per modality).
    """
    dice = whole_tumor_dice(label, predicted)
    return dice.mean(axis=1) >= dice_threshold, dice


def accept_healthy(predicted: np.ndarray, lesion_free_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The lesion filter for ``lesion_source="none"``: no segmentor finds a lesion.

    A modality counts as lesion-free when at most ``lesion_free_fraction`` of its pixels are segmented
    as lesion; the sample is kept when every requested modality is.

    Args:
        predicted: (B, M, H, W) segmentations.
        lesion_free_fraction: tolerated fraction of lesion pixels, e.g. 0.001.

    Returns:
        (bool (B,) accepted, int64 (B, M) lesion pixels per modality).
    """
    pixels = (predicted > 0).sum(axis=(-2, -1))
    tolerated = lesion_free_fraction * predicted.shape[-2] * predicted.shape[-1]
    return (pixels <= tolerated).all(axis=1), pixels
