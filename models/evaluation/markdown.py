"""Markdown helpers of the report: tables and number formats."""

from collections.abc import Sequence

ABSENT = "not in these artifacts"
"""What a cell says when the artifacts lack the network it needs."""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; :data:`ABSENT` for None, ``n/a`` for NaN."""
    if value is None:
        return ABSENT
    return "n/a" if value != value else f"{value:.{digits}f}"


def mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """``mean +- sd``."""
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"
