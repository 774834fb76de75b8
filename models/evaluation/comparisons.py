"""The paired Table 2 comparisons that carry the paper's claims, with bootstrap intervals.

Sec. 4.2 reads Table 2 through a few pairs of rows: pre-training on synthetic data (NO.25 against the
real-only NO.1; NO.6, a tenth of the real data after synthetic pre-training, against NO.1 and against
half the real data, NO.2), synthetic data as augmentation (NO.13 against NO.1) and classical
augmentation (NO.19 against NO.1). For each pair present in the run, the Dice difference of run r on
held-out case c (mean over the case's slices and the four modalities) makes the runs x cases matrix
of :func:`models.evaluation.stats.bootstrap_interval`, whose 95 % interval decides the verdict
("helps", "hurts", "cannot tell"); the point estimate is the mean over runs, not the best run's.
"""

from dataclasses import dataclass

import numpy as np

from models.evaluation.stats import RESAMPLES, Interval, bootstrap_interval, verdict
from models.evaluation.table2 import RowResult
from mrisynth.conventions import MODALITIES

COMPARISONS: tuple[tuple[int, int], ...] = ((25, 1), (6, 1), (6, 2), (13, 1), (19, 1))
"""(row, reference row) pairs of Table 2 that Sec. 4.2 reads."""


@dataclass(frozen=True)
class Comparison:
    """A row against its reference row.

    Attributes:
        row: the row's NO.
        reference: the reference row's NO.
        interval: the mean Dice difference (row minus reference) and its bootstrap interval.
        by_modality: ``{modality: interval}`` of the difference of that modality's Dice.
        verdict: ``helps``, ``hurts`` or ``cannot tell``, from ``interval``.
        paper: the paper's difference (Table 2).
    """

    row: int
    reference: int
    interval: Interval
    by_modality: dict[str, Interval]
    verdict: str
    paper: float


def differences(row: RowResult, reference: RowResult) -> np.ndarray:
    """float64 (R, C, 4): Dice of run r of ``row`` minus that of run r of ``reference``, per case, modality.

    Raises:
        ValueError: the rows have different numbers of runs or of cases.
    """
    a = np.stack([run.case_dice for run in row.runs])
    b = np.stack([run.case_dice for run in reference.runs])
    if a.shape != b.shape:
        raise ValueError(
            f"NO.{row.row.number} and NO.{reference.row.number} have runs x cases {a.shape}, {b.shape}"
        )
    return a - b


def compare_rows(results: list[RowResult], seed: int, resamples: int = RESAMPLES) -> list[Comparison]:
    """The :data:`COMPARISONS` whose two rows were trained, in that order.

    Args:
        results: the Table 2 rows.
        seed: seed of the resamples (each comparison draws from ``[seed, 4, row, reference]``).
        resamples: bootstrap resamples.
    """
    by_number = {result.row.number: result for result in results}
    comparisons = []
    for number, reference in COMPARISONS:
        if number not in by_number or reference not in by_number:
            continue
        d = differences(by_number[number], by_number[reference])
        interval = bootstrap_interval(
            d.mean(axis=2), np.random.default_rng([seed, 4, number, reference]), resamples
        )
        by_modality = {
            m: bootstrap_interval(
                d[..., i], np.random.default_rng([seed, 4, number, reference, i]), resamples
            )
            for i, m in enumerate(MODALITIES)
        }
        comparisons.append(
            Comparison(
                row=number,
                reference=reference,
                interval=interval,
                by_modality=by_modality,
                verdict=verdict(interval),
                paper=by_number[number].row.dice - by_number[reference].row.dice,
            )
        )
    return comparisons
