"""The paper's Tables 1 and 2 as data: what each row trains on, and the numbers printed for it.

Table 1 (Sec. 3.5, 4.1): segmentors trained on the real BraTS 2015 training split, tested on its test
split and on unfiltered synthetic data of each lesion-guidance variant (Sec. 2.7).

Table 2 (Sec. 3.6, 4.2): the multiple-segmentors method (4SEG) trained on mixtures of real, synthetic
and classically augmented ("enhanced", Sec. 3.3) data, every row for the same number of iterations,
scored on the real test split. Amounts are fractions of the real training split's slice count.
Mixing modes: ``random mixing`` draws from the union of the sources; ``synthetic first`` and ``real
first`` train on one source, then the other, "the training iteration number of data from different
sources [being] proportional to the amount of data" (Sec. 3.6).
"""

from dataclasses import dataclass

RANDOM_MIXING = "random mixing"
SYNTHETIC_FIRST = "synthetic first"
REAL_FIRST = "real first"
SINGLE_SOURCE = "-"
MIXING_MODES: tuple[str, ...] = (SINGLE_SOURCE, RANDOM_MIXING, SYNTHETIC_FIRST, REAL_FIRST)


@dataclass(frozen=True)
class Table1Row:
    """A row of Table 1: segmentation scheme (lesion-guidance variant), test data, MSE and Dice."""

    scheme: str
    dataset: str
    mse: float
    dice: float


PAPER_TABLE1: tuple[Table1Row, ...] = (
    Table1Row("4SEG", "real", 0.026, 0.915),
    Table1Row("1SEG", "synthetic", 0.053, 0.741),
    Table1Row("1EC+4DC", "synthetic", 0.055, 0.808),
    Table1Row("4SEG", "synthetic", 0.043, 0.838),
)
"""Table 1 as printed."""


@dataclass(frozen=True)
class Table2Row:
    """A row of Table 2.

    Attributes:
        number: the row's NO.
        real: real training data, fraction of the real training split (1.0 is x1).
        synthetic: synthetic data, same unit.
        enhanced: classically augmented real data (Sec. 3.3), same unit.
        mixing: one of :data:`MIXING_MODES`.
        mse: the paper's MSE.
        dice: the paper's Dice score.
    """

    number: int
    real: float
    synthetic: float
    enhanced: float
    mixing: str
    mse: float
    dice: float

    def __post_init__(self) -> None:
        if self.mixing not in MIXING_MODES:
            raise ValueError(f"mixing must be one of {MIXING_MODES}, got {self.mixing!r}")
        if min(self.real, self.synthetic, self.enhanced) < 0 or self.real + self.synthetic <= 0:
            raise ValueError(f"row {self.number}: amounts must be >= 0 with some real or synthetic data")
        sequential = self.mixing in (SYNTHETIC_FIRST, REAL_FIRST)
        if sequential and not (self.real > 0 and self.synthetic > 0 and self.enhanced == 0):
            raise ValueError(f"row {self.number}: {self.mixing} needs real and synthetic data only")

    @property
    def label(self) -> str:
        """The row as the report names it, e.g. ``real x1 + synthetic x50% (random mixing)``."""
        parts = [
            f"{name} {amount(value)}"
            for name, value in (
                ("real", self.real),
                ("synthetic", self.synthetic),
                ("enhanced", self.enhanced),
            )
            if value > 0
        ]
        mode = "" if self.mixing == SINGLE_SOURCE else f" ({self.mixing})"
        return " + ".join(parts) + mode


def amount(fraction: float) -> str:
    """A Table 2 amount as the paper prints it: ``x1``, ``x2``, ``x50%``, ``0``."""
    if fraction == 0:
        return "0"
    if fraction >= 1 and float(fraction).is_integer():
        return f"x{int(fraction)}"
    return f"x{round(100 * fraction)}%"


def _rows(*rows: tuple[int, float, float, float, str, float, float]) -> dict[int, Table2Row]:
    return {row[0]: Table2Row(*row) for row in rows}


PAPER_TABLE2: dict[int, Table2Row] = _rows(
    (1, 1.0, 0.0, 0.0, SINGLE_SOURCE, 0.026, 0.915),
    (2, 0.5, 0.0, 0.0, SINGLE_SOURCE, 0.032, 0.902),
    (3, 0.0, 1.0, 0.0, SINGLE_SOURCE, 0.205, 0.708),
    (4, 0.0, 2.0, 0.0, RANDOM_MIXING, 0.206, 0.736),
    (5, 0.0, 3.0, 0.0, RANDOM_MIXING, 0.205, 0.754),
    (6, 0.1, 1.0, 0.0, SYNTHETIC_FIRST, 0.031, 0.908),
    (7, 0.1, 2.0, 0.0, SYNTHETIC_FIRST, 0.028, 0.907),
    (8, 0.1, 3.0, 0.0, SYNTHETIC_FIRST, 0.030, 0.907),
    (9, 0.2, 0.8, 0.0, RANDOM_MIXING, 0.041, 0.850),
    (10, 0.5, 0.5, 0.0, RANDOM_MIXING, 0.031, 0.904),
    (11, 0.8, 0.2, 0.0, RANDOM_MIXING, 0.024, 0.935),
    (12, 1.0, 0.2, 0.0, RANDOM_MIXING, 0.025, 0.921),
    (13, 1.0, 0.5, 0.0, RANDOM_MIXING, 0.023, 0.939),
    (14, 1.0, 0.8, 0.0, RANDOM_MIXING, 0.026, 0.916),
    (15, 1.0, 1.0, 0.0, RANDOM_MIXING, 0.027, 0.913),
    (16, 1.0, 2.0, 0.0, RANDOM_MIXING, 0.033, 0.901),
    (17, 1.0, 3.0, 0.0, RANDOM_MIXING, 0.034, 0.897),
    (18, 1.0, 0.0, 0.2, RANDOM_MIXING, 0.027, 0.911),
    (19, 1.0, 0.0, 0.5, RANDOM_MIXING, 0.025, 0.927),
    (20, 1.0, 0.0, 0.8, RANDOM_MIXING, 0.026, 0.920),
    (21, 1.0, 0.0, 1.0, RANDOM_MIXING, 0.026, 0.915),
    (22, 1.0, 0.0, 2.0, RANDOM_MIXING, 0.032, 0.898),
    (23, 1.0, 0.0, 3.0, RANDOM_MIXING, 0.036, 0.885),
    (24, 1.0, 1.0, 0.0, REAL_FIRST, 0.195, 0.795),
    (25, 1.0, 1.0, 0.0, SYNTHETIC_FIRST, 0.021, 0.940),
)
"""Table 2 as printed, by NO."""

DEFAULT_ROWS: tuple[int, ...] = (1, 2, 3, 6, 13, 25, 19)
"""The rows ``mrisynth evaluate`` trains by default: real x1 (NO.1), real x50% (NO.2), synthetic x1
only (NO.3), real x10% after synthetic pre-training (NO.6), real x1 + synthetic x50% random mixing
(NO.13, the paper's best mix), synthetic-first then real x1 (NO.25, the paper's best row) and real x1
+ classical augmentation x50% (NO.19, the best augmentation row)."""


def table2_rows(numbers: tuple[int, ...]) -> list[Table2Row]:
    """The Table 2 rows of the given NO.s, in the given order.

    Raises:
        ValueError: an unknown NO. or a repeated one.
    """
    unknown = sorted(set(numbers) - set(PAPER_TABLE2))
    if unknown or len(set(numbers)) != len(numbers) or not numbers:
        raise ValueError(f"rows must be distinct NO.s of Table 2, 1 to {len(PAPER_TABLE2)}, got {numbers}")
    return [PAPER_TABLE2[number] for number in numbers]
