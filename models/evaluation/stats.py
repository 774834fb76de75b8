"""Confidence intervals of the evaluation: a two-way bootstrap over test cases and training runs.

Table 2's claims are differences of the mean whole-tumor Dice of two rows on the same held-out cases.
Two sources of noise make a difference: which cases are held out (the test set is a sample of
subjects) and which training run a row got (the seed: initial weights and batch order). Run r of
every row starts from the same initial weights (:mod:`models.evaluation.table2`), so run r of row A
and run r of row B are paired, and so are their scores on case c. The difference of a pair of rows is
then a matrix ``d[r, c]`` (runs x cases), and its point estimate the mean of ``d``.

:func:`bootstrap_interval` resamples both ways, runs with replacement and cases with replacement,
independently, and takes the mean of the resampled rows and columns of ``d`` each time (Davison and
Hinkley 1997, Sec. 3.8, the two-stage "random effects" bootstrap of a crossed design); the 2.5 and
97.5 percentiles of those means are the 95 % percentile interval. A difference that is the same
constant for every run and case gives an interval of that constant alone.

:func:`verdict` reads the interval as the report's closing note does: above 0 "helps", below 0
"hurts", containing 0 "cannot tell".
"""

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
"""Coverage of the reported intervals."""

RESAMPLES = 2000
"""Bootstrap resamples by default."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval.

    Attributes:
        estimate: the mean of the observed differences.
        low: lower end of the interval.
        high: upper end of the interval.
        confidence: its coverage, e.g. 0.95.
        runs: runs (first axis of the differences) it was computed from.
        cases: test cases (second axis) it was computed from.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    runs: int
    cases: int

    def excludes_zero(self) -> bool:
        """Whether 0 lies outside the closed interval [low, high]."""
        return self.low > 0 or self.high < 0


def bootstrap_interval(
    differences: np.ndarray,
    rng: np.random.Generator,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The percentile interval of the mean of a runs x cases matrix (module docstring).

    Args:
        differences: float (R, C), R >= 1 runs, C >= 1 cases, finite; e.g. Dice of row A minus Dice of
            row B of run r on case c.
        rng: the generator of the resamples.
        resamples: bootstrap resamples, >= 1; default 2000.
        confidence: coverage in (0, 1); default 0.95.

    Returns:
        The interval. With R = C = 1 it is the single value (nothing to resample).

    Raises:
        ValueError: a matrix that is not 2D, empty or not finite, or invalid ``resamples`` / ``confidence``.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 2 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"differences must be a finite, non-empty (runs, cases) matrix, got shape {d.shape}")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and confidence in (0, 1), got {resamples}, {confidence}")
    runs, cases = d.shape
    run_draws = rng.integers(runs, size=(resamples, runs))
    case_draws = rng.integers(cases, size=(resamples, cases))
    # mean over the resampled runs and cases: d[run_draws[b]][:, case_draws[b]].mean(), vectorized
    per_run = d[run_draws]  # (B, R, C)
    means = np.take_along_axis(per_run, case_draws[:, None, :].repeat(runs, axis=1), axis=2).mean(axis=(1, 2))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    estimate = float(d.mean())
    # the percentiles of identical values can differ from them by rounding; keep the estimate inside
    return Interval(estimate, min(float(low), estimate), max(float(high), estimate), confidence, runs, cases)


def verdict(interval: Interval) -> str:
    """``helps`` (interval above 0), ``hurts`` (below 0) or ``cannot tell`` (contains 0)."""
    if interval.low > 0:
        return "helps"
    if interval.high < 0:
        return "hurts"
    return "cannot tell"


def mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of a 1D array."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if not len(x):
        raise ValueError("mean_sd needs at least one value")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def case_means(per_image: np.ndarray, case_index: np.ndarray, cases: int) -> np.ndarray:
    """Mean of per-image scores over the images of each case.

    Args:
        per_image: float (N, ...) scores of N images (e.g. (N, 4): Dice per modality).
        case_index: int (N,), the case of each image in ``range(cases)``.
        cases: number of cases C; every case must hold an image.

    Returns:
        float64 (C, ...).
    """
    if len(per_image) != len(case_index):
        raise ValueError(f"{len(per_image)} scores for {len(case_index)} case indices")
    counts = np.bincount(case_index, minlength=cases)
    if len(counts) != cases or (counts == 0).any():
        raise ValueError(f"every one of the {cases} cases needs an image, counts {counts.tolist()}")
    sums = np.zeros((cases, *per_image.shape[1:]), dtype=np.float64)
    np.add.at(sums, case_index, per_image)
    return sums / counts.reshape(-1, *([1] * (per_image.ndim - 1)))
