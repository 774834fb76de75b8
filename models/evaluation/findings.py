"""The report's closing note, written from the numbers so that a rerun on other artifacts stays true.

It answers the questions a user choosing the service asks: does synthetic pre-training help on this
data, and by how much (Table 2 NO.25 and NO.6 against NO.1 and NO.2, as Sec. 4.2 reads them); do
real-trained segmentors find the intended lesions in the synthetic images (Table 1); and where the
artifacts fall short of the paper (synthetic-only training, registration, realism, diversity, the
lesion filter). A difference between two rows counts only when it exceeds the noise of one training,
estimated as the largest spread of the test Dice over the last three evaluations of any row's run
(and over the repeats of a row, when there are several).
"""

import numpy as np

from models.evaluation.metrics import dice
from models.evaluation.paper import PAPER_TABLE2
from models.evaluation.run import EvaluationResults
from models.evaluation.table1 import FidelityRow
from models.evaluation.table2 import RowResult

LAST_EVALUATIONS = 3
"""Evaluations at the end of a run whose spread estimates the noise of one training."""

VISIBLE_LESIONS = 0.5
"""Below this fraction of their Dice on real slices, the real-trained segmentors' Dice on synthetic
images (Table 1) says that the synthetic images do not show the lesions of their labels."""


def training_noise(results: list[RowResult]) -> float:
    """Largest spread (max - min) of the test Dice over a run's last evaluations or a row's repeats."""
    spreads = [0.0]
    for result in results:
        tail = result.curve.test_dice[-LAST_EVALUATIONS:]
        spreads += [max(tail) - min(tail), max(result.run_dice) - min(result.run_dice)]
    return max(spreads)


COMPARISONS: tuple[tuple[int, int], ...] = ((25, 1), (6, 2), (6, 1), (13, 1), (19, 1))
"""(row, reference row) pairs of Table 2 that Sec. 4.2 reads: pre-training on synthetic data (NO.25,
NO.6), synthetic data as augmentation (NO.13) and classical augmentation (NO.19)."""


def _compare(row: RowResult, reference: RowResult, noise: float) -> str:
    delta = row.dice - reference.dice
    if abs(delta) <= noise:
        verdict = f"no difference beyond the noise of one training (+-{noise:.3f})"
    else:
        verdict = f"{'better' if delta > 0 else 'worse'} by {abs(delta):.3f}"
    paper = row.row.dice - reference.row.dice
    return (
        f"NO.{row.row.number}, {row.row.label}: Dice {row.dice:.3f} against {reference.dice:.3f} for "
        f"NO.{reference.row.number}, {reference.row.label}: {verdict} (paper: {paper:+.3f})."
    )


def _pretraining(by_number: dict[int, RowResult], noise: float) -> list[str]:
    notes = [
        _compare(by_number[row], by_number[reference], noise)
        for row, reference in COMPARISONS
        if row in by_number and reference in by_number
    ]
    if 3 in by_number:
        row, real = by_number[3], PAPER_TABLE2[1]
        notes.append(
            f"NO.3, {row.row.label}: segmentors trained on synthetic data only reach Dice {row.dice:.3f} "
            f"on real data (paper: {row.row.dice:.3f}, against {real.dice:.3f} for real x1)."
        )
    return notes


def _shortfalls(results: EvaluationResults) -> list[str]:
    notes = []
    real, synthetic = _fidelity(results)
    if synthetic is not None and synthetic.dice is not None and real.dice:
        notes.append(
            f"Lesion fidelity (Table 1): the real-trained {synthetic.scheme} segmentors find the intended "
            f"lesions in unfiltered synthetic images with Dice {synthetic.dice:.3f}, against "
            f"{real.dice:.3f} on real test slices ({synthetic.dice / real.dice:.0%}; paper: "
            f"{synthetic.paper_dice:.3f} against {real.paper_dice:.3f}, "
            f"{synthetic.paper_dice / real.paper_dice:.0%}). On real slices they reach, per modality, "
            + ", ".join(f"{m} {d:.2f}" for m, d in real.dice_by_modality.items())
            + f" (paper, averaged: {real.paper_dice:.3f})."
        )
    registered, realism = results.registration, results.realism
    alike = realism.modalities_synthetic > realism.modalities_real
    notes.append(
        f"Registration: Algorithm 1 maps of a synthetic sample's modalities agree with Dice "
        f"{registered.synthetic_between:.3f} (real registered slices: {registered.real_between:.3f}; "
        f"unrelated synthetic samples: {registered.unpaired_between:.3f}), and with the input map f "
        f"with Dice {registered.synthetic_with_input:.3f}. The four synthetic modalities have a mean "
        f"MS-SSIM of {realism.modalities_synthetic:.3f} with each other, real ones "
        f"{realism.modalities_real:.3f}"
        + (
            ": they differ less in contrast than real modalities do, which makes agreement easy."
            if alike
            else "."
        )
    )
    notes.append(_distinct_modalities(results))
    synthetic_swd = _mean([v for values in realism.swd_synthetic.values() for v in values])
    real_swd = _mean([v for values in realism.swd_real.values() for v in values])
    notes.append(
        f"Realism: the sliced Wasserstein distance of synthetic to real training patches averages "
        f"{synthetic_swd:.1f} (x1e3, over modalities and pyramid levels), "
        f"{synthetic_swd / real_swd:.1f} times that of the real test slices ({real_swd:.1f})."
    )
    synthetic_ssim = _mean(list(realism.ms_ssim_synthetic.values()))
    real_ssim = _mean(list(realism.ms_ssim_real.values()))
    verdict = "less diverse than" if synthetic_ssim > real_ssim else "at least as diverse as"
    notes.append(
        f"Diversity: mean MS-SSIM among synthetic samples {synthetic_ssim:.3f}, among real slices "
        f"{real_ssim:.3f}: the synthetic set is {verdict} the real one."
    )
    notes += _filter_ceiling(results)
    if results.table2_set is not None and results.table2_set.note:
        notes.append(f"Lesion filter: {results.table2_set.note}.")
    return notes


def _distinct_modalities(results: EvaluationResults) -> str:
    """Lesion contrast signs and the independent probe's accuracy (models.evaluation.modalities)."""
    scores = results.modalities
    pairs = [
        (scores.contrast_real[m][value], scores.contrast_synthetic[m][value])
        for m in scores.contrast_real
        for value in scores.contrast_real[m]
        if not np.isnan(scores.contrast_real[m][value])
    ]
    agree = sum(bool(np.sign(real) == np.sign(synthetic)) for real, synthetic in pairs)
    probe = ", ".join(
        f"{m} {scores.probe_synthetic[m]:.0%} (real {scores.probe_real[m]:.0%})"
        for m in scores.probe_synthetic
    )
    return (
        f"Distinct modalities: the lesion contrast of a region against the healthy brain has the real sign "
        f"in {agree} of {len(pairs)} (modality, region) pairs; an independent modality probe trained on real "
        f"slices names the requested modality of synthetic images: {probe}."
    )


def _filter_ceiling(results: EvaluationResults) -> list[str]:
    """The lesion filter at the manifest's Dice on real unseen slices against unfiltered synthetic ones."""
    real, synthetic = _fidelity(results)
    threshold = results.manifest.thresholds.dice
    if synthetic is None or threshold not in real.filter_pass:
        return []
    return [
        f"Lesion filter at the artifacts' default Dice {threshold:g}: it would keep "
        f"{real.filter_pass[threshold]:.1%} of the real test slices with a lesion and "
        f"{synthetic.filter_pass[threshold]:.1%} of the unfiltered synthetic samples. The real share is "
        "the most a synthetic sample as realistic as real data could expect from these segmentors."
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def empty_prediction_dice(labels: np.ndarray) -> float:
    """Dice of a segmentor that finds no lesion anywhere: the share of lesion-free slices in ``labels``."""
    return float(dice(labels > 0, np.zeros(labels.shape, dtype=bool)).mean())


def _floor(results: EvaluationResults, noise: float) -> str:
    """Which rows learned nothing usable: Dice no better than finding no lesion at all."""
    floor = empty_prediction_dice(results.test.labels)
    empty = [f"NO.{r.row.number}" for r in results.table2 if r.dice <= floor + noise]
    text = (
        f"A segmentor that finds no lesion scores Dice {floor:.3f} here (the share of lesion-free test "
        "slices); a modality at that value in Table 2 found no lesion"
    )
    return text + (f"; rows at that level: {', '.join(empty)}." if empty else ".")


def _fidelity(results: EvaluationResults) -> tuple[FidelityRow, FidelityRow | None]:
    """Table 1's real row and its synthetic row of the artifacts' variant (None if absent)."""
    real = next(row for row in results.table1 if row.dataset == "real")
    synthetic = next((r for r in results.table1 if r.dataset == "synthetic" and r.dice is not None), None)
    return real, synthetic


def _why(results: EvaluationResults, by_number: dict[int, RowResult], noise: float) -> list[str]:
    """When rows with synthetic data lose and the synthetic images do not show their lesions, say so."""
    real, synthetic = _fidelity(results)
    if synthetic is None or synthetic.dice is None or real.dice is None or 1 not in by_number:
        return []
    losing = [
        f"NO.{number}"
        for number, result in by_number.items()
        if result.row.synthetic > 0 and result.dice < by_number[1].dice - noise
    ]
    if not losing or synthetic.dice > VISIBLE_LESIONS * real.dice:
        return []
    return [
        "This agrees with Table 1: the synthetic images barely show the lesions of their labels, so "
        f"training on them teaches the segmentors to call lesion-labelled tissue normal ({', '.join(losing)} "
        "lose against NO.1); synthetic pre-training can only help once the generator draws its lesions."
    ]


def closing_note(results: EvaluationResults) -> list[str]:
    """The closing note as markdown bullet texts (without the bullets)."""
    by_number = {result.row.number: result for result in results.table2}
    noise = training_noise(results.table2)
    runs = results.config.table2.repeats
    notes = _pretraining(by_number, noise) + _why(results, by_number, noise)
    if results.table2:
        notes.append(_floor(results, noise))
    notes.append(
        f"Each row was trained {runs} time{'s' if runs > 1 else ''} for {results.config.table2.steps} steps "
        f"(the paper: the best of 4 runs of 100 epochs each) and scored on {len(results.test)} test "
        f"slices of {len(results.test.cases)} case{'s' if len(results.test.cases) > 1 else ''}; "
        f"differences below {noise:.3f} are within the noise of one training."
    )
    return notes + _shortfalls(results)
