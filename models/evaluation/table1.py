"""Table 1, lesion fidelity (Sec. 3.5, 4.1): real-trained segmentors on real and on synthetic data.

"We train 4 tumor lesion segmentors using the multiple segmentors method on BRATS2015 training
dataset and test them on BRATS2015 test dataset. Then we use the trained segmentors to segment the
unfiltered synthetic data from different lesion generation guidance methods." The segmentors trained
on the real training split are the artifacts' ``SEG_<modality>`` (the segmentation stage, Sec. 2.7,
the ones the worker's lesion filter uses), run here with onnxruntime. A synthetic sample is segmented
modality by modality and scored against the label it was synthesized from. The artifacts hold one
lesion-guidance variant (the manifest's ``lesion_guidance``); the paper's rows of the others are
reported as not in these artifacts.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from models.evaluation.metrics import segmentation_scores
from models.evaluation.paper import PAPER_TABLE1
from mrisynth.conventions import MODALITIES
from worker.sessions import Synthesizer

SEGMENT_BATCH = 32
"""Images per onnxruntime call."""

FILTER_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Dice thresholds at which the lesion filter's pass rate is reported (the paper's default is 0.95)."""


@dataclass(frozen=True)
class FidelityRow:
    """A row of our Table 1.

    Attributes:
        scheme: the lesion-guidance variant of the segmentors (the paper's "segmentation schemes").
        dataset: ``real`` (the real test split) or ``synthetic``.
        images: 2D test images scored (each in four modalities).
        mse: mean MSE over images and modalities; None when the variant is not in the artifacts.
        dice: mean whole-tumor Dice over images and modalities; None likewise.
        dice_by_modality: mean Dice per modality.
        filter_pass: by threshold t of :data:`FILTER_THRESHOLDS`, the share of the images with a lesion
            that the worker's lesion filter (Sec. 2.8) would keep at Dice t: their mean whole-tumor Dice
            over the four modalities is >= t. On the real test split it is the filter's ceiling: the
            share of real, unseen slices the segmentors themselves pass.
        paper_mse: the paper's MSE of this row.
        paper_dice: the paper's Dice of this row.
    """

    scheme: str
    dataset: str
    images: int
    mse: float | None
    dice: float | None
    dice_by_modality: dict[str, float]
    paper_mse: float
    paper_dice: float
    filter_pass: dict[float, float] = dataclasses.field(default_factory=dict)


def filter_pass_rates(dice: np.ndarray, labels: np.ndarray) -> dict[float, float]:
    """Share of the images with a lesion whose mean Dice over modalities reaches each threshold.

    Args:
        dice: float64 (N, M), whole-tumor Dice of each image in each modality.
        labels: (N, H, W) true labels.

    Returns:
        By threshold of :data:`FILTER_THRESHOLDS`, a share in [0, 1] (0 when no image has a lesion).
    """
    with_lesion = labels.reshape(len(labels), -1).max(axis=1, initial=0) > 0
    mean = dice[with_lesion].mean(axis=1)
    return {t: float((mean >= t).mean()) if len(mean) else 0.0 for t in FILTER_THRESHOLDS}


def segment(synthesizer: Synthesizer, images: np.ndarray) -> np.ndarray:
    """Label probabilities of every modality's segmentor SEG_i.

    Args:
        synthesizer: the loaded artifacts.
        images: float32 (N, 4, H, W), modalities in ``MODALITIES`` order.

    Returns:
        float32 (N, 4, 4, H, W): [image, modality, label class, y, x].
    """
    per_modality = []
    for j, modality in enumerate(MODALITIES):
        network = synthesizer.manifest.segmentors[modality]
        batches = [
            synthesizer.run(network, image=images[start : start + SEGMENT_BATCH, j : j + 1])
            for start in range(0, len(images), SEGMENT_BATCH)
        ]
        per_modality.append(np.concatenate(batches))
    return np.stack(per_modality, axis=1)


def lesion_fidelity(
    synthesizer: Synthesizer,
    real_images: np.ndarray,
    real_labels: np.ndarray,
    synthetic_images: np.ndarray,
    synthetic_labels: np.ndarray,
) -> list[FidelityRow]:
    """Our Table 1, in the paper's row order.

    Args:
        synthesizer: the artifacts (segmentors of the manifest's lesion-guidance variant).
        real_images: float32 (N, 4, H, W), the real test split.
        real_labels: uint8 (N, H, W).
        synthetic_images: float32 (N', 4, H, W), unfiltered synthetic samples.
        synthetic_labels: uint8 (N', H, W), the labels they were synthesized from.

    Returns:
        One row per row of the paper's Table 1; the real row is scored with the artifacts' variant.
    """
    variant = synthesizer.manifest.lesion_guidance
    labels_of = {"real": real_labels, "synthetic": synthetic_labels}
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {
        dataset: segmentation_scores(segment(synthesizer, images), labels_of[dataset])
        for dataset, images in (("real", real_images), ("synthetic", synthetic_images))
    }
    rows = []
    for paper in PAPER_TABLE1:
        row = FidelityRow(
            scheme=variant if paper.dataset == "real" else paper.scheme,
            dataset=paper.dataset,
            images=0,
            mse=None,
            dice=None,
            dice_by_modality={},
            paper_mse=paper.mse,
            paper_dice=paper.dice,
        )
        if paper.dataset == "real" or paper.scheme == variant:
            dice, mse = scored[paper.dataset]
            by_modality = dict(zip(MODALITIES, map(float, dice.mean(axis=0)), strict=True))
            row = dataclasses.replace(
                row,
                images=len(dice),
                mse=float(mse.mean()),
                dice=float(dice.mean()),
                dice_by_modality=by_modality,
                filter_pass=filter_pass_rates(dice, labels_of[paper.dataset]),
            )
        rows.append(row)
    return rows


def real_row(synthesizer: Synthesizer, images: np.ndarray, labels: np.ndarray, dataset: str) -> FidelityRow:
    """Table 1's real row on other real slices (e.g. the held-out set): the artifacts' segmentors on them.

    Args:
        synthesizer: the artifacts.
        images: float32 (N, 4, H, W) real slices.
        labels: uint8 (N, H, W) their labels.
        dataset: the row's dataset name in the report.
    """
    dice, mse = segmentation_scores(segment(synthesizer, images), labels)
    paper = PAPER_TABLE1[0]
    return FidelityRow(
        scheme=synthesizer.manifest.lesion_guidance,
        dataset=dataset,
        images=len(dice),
        mse=float(mse.mean()),
        dice=float(dice.mean()),
        dice_by_modality=dict(zip(MODALITIES, map(float, dice.mean(axis=0)), strict=True)),
        paper_mse=paper.mse,
        paper_dice=paper.dice,
        filter_pass=filter_pass_rates(dice, labels),
    )
