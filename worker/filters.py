"""The numpy side of synthesis: the fusion map (Sec. 2.5) and the lesion filter (Sec. 2.8).

The fusion map is the twin of :func:`models.fusion.fuse`, with the weights read from the manifest
(0.2 and 0.8). The lesion filter scores a synthetic sample by the **whole-tumor Dice** (lesion =
label > 0) between the input label and each requested modality's segmentation, averaged over the
modalities: whole tumor is the region every modality is trained to show, it is BraTS's primary
region, and it does not collapse to 0 on the small sub-regions (necrosis, enhancing tumor) that a
96 x 96 slice may hold a handful of pixels of. Algorithm 3, the structure filter, is
:func:`mrisynth.structure.structure_mae`.

The filters decide on scores per modality, (B, M) arrays in which a modality not evaluated yet is
missing (NaN Dice, -1 lesion pixels). :func:`may_pass` is the filter applied to the best completion of
the missing scores (Dice 1, no lesion pixel): when it says no, the complete scores would say no too,
so a candidate can be rejected before the remaining modalities are synthesized and segmented, and
the accepted candidates are exactly those of the filter on complete scores. :class:`RejectionTally`
orders the modalities so that the likeliest rejecter is evaluated first.
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


def lesion_pixels(predicted: np.ndarray) -> np.ndarray:
    """int64 (...) pixels segmented as lesion (label > 0) in each (H, W) image of ``predicted``."""
    return np.asarray((predicted > 0).sum(axis=(-2, -1)), dtype=np.int64)


def accept_lesion(dice: np.ndarray, dice_threshold: float) -> np.ndarray:
    """Sec. 2.8's lesion filter for samples with a lesion: mean whole-tumor Dice >= the threshold.

    Args:
        dice: float64 (B, M) whole-tumor Dice per requested modality (:func:`whole_tumor_dice`); a row
            with a missing (NaN) score is rejected.
        dice_threshold: smallest accepted mean Dice, e.g. the paper's 0.95.

    Returns:
        bool (B,) accepted.
    """
    return np.asarray(dice.mean(axis=1) >= dice_threshold)


def accept_healthy(
    pixels: np.ndarray, lesion_free_fraction: float, image_size: tuple[int, int]
) -> np.ndarray:
    """The lesion filter for ``lesion_source="none"``: no segmentor finds a lesion.

    A modality counts as lesion-free when at most ``lesion_free_fraction`` of its pixels are segmented
    as lesion; the sample is kept when every requested modality is.

    Args:
        pixels: int64 (B, M) lesion pixels per modality (:func:`lesion_pixels`); a missing score (-1)
            counts as lesion-free.
        lesion_free_fraction: tolerated fraction of lesion pixels, e.g. 0.001.
        image_size: (H, W) of the segmented images.

    Returns:
        bool (B,) accepted.
    """
    tolerated = lesion_free_fraction * image_size[0] * image_size[1]
    return np.asarray((pixels <= tolerated).all(axis=1))


def may_pass(
    dice: np.ndarray,
    pixels: np.ndarray,
    *,
    healthy: bool,
    threshold: float,
    image_size: tuple[int, int],
) -> np.ndarray:
    """Whether the lesion filter can still accept, whatever the missing scores turn out to be.

    The filter on the best completion of the scores: missing Dice taken as 1.0 (lesion samples),
    missing lesion pixels as 0 (healthy samples). Floating-point addition is monotonic and the mean
    is taken the same way as the filter's, so False here implies False for the complete scores; on
    complete scores this is the filter itself.

    Args:
        dice: float64 (B, M) Dice, NaN where missing.
        pixels: int64 (B, M) lesion pixels, -1 where missing.
        healthy: ``lesion_source="none"``: the filter is :func:`accept_healthy`, else :func:`accept_lesion`.
        threshold: ``lesion_free_fraction`` when healthy, the Dice threshold otherwise.
        image_size: (H, W) of the segmented images.

    Returns:
        bool (B,).
    """
    if healthy:
        return accept_healthy(pixels, threshold, image_size)
    return accept_lesion(np.where(np.isnan(dice), 1.0, dice), threshold)


class RejectionTally:
    """How often each modality's own score fails the lesion filter, to evaluate the likeliest first.

    A modality's score fails when its Dice is below the threshold (lesion samples) or its lesion pixels
    exceed the tolerance (healthy samples). The order changes what is computed, never what is accepted
    (:func:`may_pass`).

    Args:
        modalities: number M of requested modalities.
    """

    def __init__(self, modalities: int) -> None:
        self.failed = np.zeros(modalities, dtype=np.int64)
        self.evaluated = np.zeros(modalities, dtype=np.int64)

    def order(self) -> list[int]:
        """Modality indices, highest failure rate first; ties (and the first batch) in request order."""
        rates = self.failed / np.maximum(self.evaluated, 1)
        return sorted(range(len(rates)), key=lambda j: -rates[j])

    def add(self, modality: int, failed: np.ndarray) -> None:
        """Count bool ``failed`` (B,) outcomes of one modality's score."""
        self.failed[modality] += int(failed.sum())
        self.evaluated[modality] += len(failed)
