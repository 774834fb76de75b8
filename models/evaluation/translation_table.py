"""The translation table as BraSyn scores it (issue 17): each modality dropped in turn and synthesized.

For every held-out real slice and every target modality i, the real image of i is dropped and
synthesized with :func:`worker.translation.translate` (the mean of EC's codes of the inputs, then DC
in modality i) from

* the other three modalities (BraSyn's task: one missing modality of four), and
* T1 alone (targets T1ce, T2 and FLAIR): the single most common acquisition;

and scored against the real image with BraSyn's SSIM and PSNR inside and outside the tumour
(:mod:`models.evaluation.fidelity`). A **baseline** in the same table needs no network: one input
modality histogram-matched (:func:`skimage.exposure.match_histograms`) to the target modality's
intensities over the real training slices (a seeded sample of ``REFERENCE_SLICES`` of them). Its input
is T1 for the targets T1ce, T2 and FLAIR (so that it compares with "from T1 alone"), and T1ce, the
nearest contrast, for the target T1. A network that does not beat it has learnt no more than the
intensity mapping of the target.
"""

from dataclasses import dataclass

import numpy as np
from skimage.exposure import match_histograms

from models.evaluation.fidelity import paired_scores
from mrisynth.conventions import MODALITIES
from worker.sessions import Synthesizer
from worker.translation import translate

REFERENCE_SLICES = 64
"""Training slices whose pooled intensities are the baseline's target histogram."""

BATCH = 32
"""Slices per translation call."""

NETWORK = "EC + DC"
BASELINE = "histogram matching"


@dataclass(frozen=True)
class TranslationRow:
    """One line of the table.

    Attributes:
        target: the synthesized modality.
        inputs: the input modalities.
        method: :data:`NETWORK` or :data:`BASELINE`.
        scores: ``{"ssim_tumour", "ssim_healthy", "psnr_tumour", "psnr_healthy": mean over slices}``.
        slices: held-out slices scored (the tumour scores: those with a tumour).
    """

    target: str
    inputs: tuple[str, ...]
    method: str
    scores: dict[str, float]
    slices: int


def baseline_input(target: str) -> str:
    """The modality the baseline matches to ``target`` (module docstring)."""
    return "t1ce" if target == "t1" else "t1"


def histogram_baseline(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each source slice histogram-matched to the pooled reference intensities.

    Args:
        source: float32 (N, H, W) images of the input modality.
        reference: float32 (K, H, W) real training images of the target modality.

    Returns:
        float32 (N, H, W) with the reference's intensity distribution.
    """
    pooled = reference.reshape(-1, reference.shape[-1])
    return np.stack([match_histograms(image, pooled) for image in source]).astype(np.float32)


def _translated(
    synthesizer: Synthesizer, images: np.ndarray, inputs: tuple[str, ...], target: str
) -> np.ndarray:
    out = np.empty((len(images), *images.shape[2:]), np.float32)
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        given = {m: np.ascontiguousarray(chunk[:, MODALITIES.index(m)]) for m in inputs}
        out[start : start + BATCH] = translate(synthesizer, given, [target])[target]
    return out


def _row(
    target: str,
    inputs: tuple[str, ...],
    method: str,
    made: np.ndarray,
    held_out: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> TranslationRow:
    images, labels, brain = held_out
    real = images[:, MODALITIES.index(target)]
    scores = paired_scores(real[:, None], made[:, None], labels, (target,), brain)
    return TranslationRow(target, inputs, method, scores.means()[target], len(labels))


def translation_table(
    synthesizer: Synthesizer,
    held_out: tuple[np.ndarray, np.ndarray, np.ndarray],
    train_images: np.ndarray,
    seed: int,
) -> list[TranslationRow]:
    """The table of the module docstring, by target in ``MODALITIES`` order.

    Args:
        synthesizer: the artifacts.
        held_out: (float32 (N, 4, S, S) images, uint8 (N, S, S) labels, (N, S, S) brain masks) of the
            real held-out slices; every synthetic image is set to its minimum outside the brain
            (:mod:`models.evaluation.fidelity`).
        train_images: float32 (N', 4, S, S) real training slices (the baseline's reference).
        seed: seed of the reference sample.
    """
    images = held_out[0]
    rng = np.random.default_rng([seed, 5])
    reference_rows = np.sort(
        rng.choice(len(train_images), min(REFERENCE_SLICES, len(train_images)), replace=False)
    )
    rows = []
    for i, target in enumerate(MODALITIES):
        input_sets = [tuple(m for m in MODALITIES if m != target)] + ([("t1",)] if target != "t1" else [])
        for inputs in input_sets:
            rows.append(
                _row(target, inputs, NETWORK, _translated(synthesizer, images, inputs, target), held_out)
            )
        source = baseline_input(target)
        matched = histogram_baseline(images[:, MODALITIES.index(source)], train_images[reference_rows, i])
        rows.append(_row(target, (source,), BASELINE, matched, held_out))
    return rows
