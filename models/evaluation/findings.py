"""The report's closing note, written from the numbers so that a rerun on other artifacts stays true.

It answers the questions a user choosing the service asks: does synthetic pre-training help on this
data, and by how much (Table 2 NO.25 and NO.6 against NO.1 and NO.2, as Sec. 4.2 reads them); do
real-trained segmentors find the intended lesions in the synthetic images (Table 1); and where the
artifacts fall short of the paper (synthetic-only training, registration, realism, diversity, the
lesion filter). Whether a row helps, hurts or cannot be told apart from its reference is read from the
95 % bootstrap interval of the paired Dice difference over held-out cases and runs
(:mod:`models.evaluation.comparisons`), never from the point estimate. The noise of one training (the
largest spread of the test Dice over the last evaluations of a run, or over a row's repeats) only
flags rows that learned nothing.
"""

import numpy as np

from models.evaluation.comparisons import Comparison
from models.evaluation.metrics import dice
from models.evaluation.paper import PAPER_TABLE2
from models.evaluation.run import EvaluationResults
from models.evaluation.table1 import FidelityRow
from models.evaluation.table2 import RowResult

LAST_EVALUATIONS = 3
"""Evaluations at the end of a run whose spread estimates the noise of one training."""

EMPTY_MARGIN = 0.02
"""A row or modality within this of the no-lesion Dice found no lesion."""

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


def _compare(comparison: Comparison, by_number: dict[int, RowResult]) -> str:
    row, reference = by_number[comparison.row], by_number[comparison.reference]
    interval = comparison.interval
    mean_row, mean_reference = row.mean_sd()[0], reference.mean_sd()[0]
    return (
        f"NO.{comparison.row}, {row.row.label}: mean Dice {mean_row:.3f} against {mean_reference:.3f} for "
        f"NO.{comparison.reference}, {reference.row.label}, difference {interval.estimate:+.3f} "
        f"({interval.confidence:.0%} interval {interval.low:+.3f} to {interval.high:+.3f} over "
        f"{interval.cases} held-out cases and {interval.runs} runs): **{comparison.verdict}** "
        f"(paper: {comparison.paper:+.3f})."
    )


def _pretraining(results: EvaluationResults, by_number: dict[int, RowResult]) -> list[str]:
    notes = [_compare(comparison, by_number) for comparison in results.comparisons]
    if 3 in by_number:
        row, real = by_number[3], PAPER_TABLE2[1]
        notes.append(
            f"NO.3, {row.row.label}: segmentors trained on synthetic data only reach Dice {row.dice:.3f} "
            f"(best run; mean {row.mean_sd()[0]:.3f}) on real data (paper: {row.row.dice:.3f}, against "
            f"{real.dice:.3f} for real x1)."
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
        f"{synthetic_swd / real_swd:.1f} times that of the real held-out slices ({real_swd:.1f})."
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


def _floor(results: EvaluationResults) -> str:
    """Which rows, and which modalities of the real-only row, learned nothing usable: Dice no better than
    finding no lesion at all."""
    floor = empty_prediction_dice(results.held_out.split.labels)
    empty = [f"NO.{r.row.number}" for r in results.table2 if r.mean_sd()[0] <= floor + EMPTY_MARGIN]
    text = (
        f"A segmentor that finds no lesion scores Dice {floor:.3f} here (the share of lesion-free held-out "
        "slices); a modality at that value in Table 2 found no lesion"
    )
    text += f"; rows at that level: {', '.join(empty)}." if empty else "."
    real_only = next((r for r in results.table2 if r.row.number == 1), None)
    if real_only is not None:
        means = {m: v[0] for m, v in real_only.modality_mean_sd().items()}
        blind = [m for m, v in means.items() if v <= floor + EMPTY_MARGIN]
        text += (
            (
                " The real-only row NO.1 finds lesions in every modality (mean Dice "
                if not blind
                else f" The real-only row NO.1 finds no lesion in {', '.join(blind)} (mean Dice "
            )
            + ", ".join(f"{m} {v:.2f}" for m, v in means.items())
            + ")."
        )
    return text


def _fidelity(results: EvaluationResults) -> tuple[FidelityRow, FidelityRow | None]:
    """Table 1's real row and its synthetic row of the artifacts' variant (None if absent)."""
    real = next(row for row in results.table1 if row.dataset == "real")
    synthetic = next((r for r in results.table1 if r.dataset == "synthetic" and r.dice is not None), None)
    return real, synthetic


def _why(results: EvaluationResults) -> list[str]:
    """When rows with synthetic data hurt and the synthetic images do not show their lesions, say so."""
    real, synthetic = _fidelity(results)
    if synthetic is None or synthetic.dice is None or real.dice is None:
        return []
    by_number = {result.row.number: result for result in results.table2}
    losing = [
        f"NO.{c.row}"
        for c in results.comparisons
        if c.reference == 1 and c.verdict == "hurts" and by_number[c.row].row.synthetic > 0
    ]
    if not losing or synthetic.dice > VISIBLE_LESIONS * real.dice:
        return []
    return [
        "This agrees with Table 1: the synthetic images barely show the lesions of their labels, so "
        f"training on them teaches the segmentors to call lesion-labelled tissue normal ({', '.join(losing)} "
        "hurt against NO.1); synthetic pre-training can only help once the generator draws its lesions."
    ]


def closing_note(results: EvaluationResults) -> list[str]:
    """The closing note as markdown bullet texts (without the bullets)."""
    by_number = {result.row.number: result for result in results.table2}
    noise = training_noise(results.table2)
    runs = results.config.table2.repeats
    notes = _pretraining(results, by_number) + _why(results)
    if results.table2:
        notes.append(_floor(results))
    held = results.held_out
    notes.append(
        f"Each row was trained {runs} time{'s' if runs > 1 else ''} for {results.config.table2.steps} steps "
        f"(the paper: the best of 4 runs of 100 epochs each) and scored on {len(held)} held-out slices of "
        f"{len(held.split.cases)} case{'s' if len(held.split.cases) > 1 else ''}; the largest spread of one "
        f"training's test Dice is {noise:.3f}."
    )
    return notes + _shortfalls(results)
