"""Numbers written for people: rounded to what they can mean (STYLE 17b).

A notebook that prints ``p = 0.047619047619047616`` claims sixteen digits it does not have:
a permutation p-value from 20 permutations moves in steps of 1/21, an AUROC on 6 test
subjects in steps of 1/9. These helpers give the few digits that carry information, and
the notebooks, tables and verdict sentences print through them.
"""

from __future__ import annotations

import math

__all__ = ["format_number", "format_p_value", "format_score", "round_table"]


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def format_number(x, digits: int = 2) -> str:
    """``x`` with ``digits`` significant digits (no scientific notation between 1e-3 and
    1e6); ``"n/a"`` for None/NaN. ``format_number(0.047619) == "0.048"``."""
    if not _finite(x):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude < -3 or magnitude >= 6:
        return f"{x:.{max(digits - 1, 0)}e}"
    decimals = max(digits - 1 - magnitude, 0)
    return f"{round(x, decimals):.{decimals}f}"


def format_score(x, decimals: int = 2) -> str:
    """A score on a fixed scale (AUROC, R², accuracy, correlation): ``decimals`` places
    (``0.96``); ``"n/a"`` for None/NaN (e.g. AUROC with one class in the test set)."""
    if not _finite(x):
        return "n/a"
    return f"{float(x):.{decimals}f}"


def format_p_value(p, num_permutations: int | None = None) -> str:
    """``"p = 0.048"`` / ``"p < 0.001"``; with ``num_permutations`` a p-value at its floor
    ``1 / (n + 1)`` reads ``"p ≤ 0.048 (the smallest possible with 20 permutations)"``, so
    nobody mistakes the resolution of the test for the strength of the evidence."""
    if not _finite(p):
        return "p = n/a"
    p = float(p)
    if not 0 <= p <= 1:
        raise ValueError(f"p-value {p}: expected a number in [0, 1]")
    if num_permutations:
        floor = 1.0 / (int(num_permutations) + 1)
        if p <= floor + 1e-12:
            return (
                f"p ≤ {format_number(floor)} (the smallest possible with "
                f"{int(num_permutations)} permutations)"
            )
    if p < 0.001:
        return "p < 0.001"
    return f"p = {format_number(p, 2)}"


def round_table(df, decimals: int = 3):
    """A copy of DataFrame ``df`` with float columns rounded to ``decimals`` places (for
    display; write the unrounded table to files)."""
    floats = df.select_dtypes("float").columns
    return df.round({c: decimals for c in floats})
