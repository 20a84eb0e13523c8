"""One validator for names a user types: allowed values with a "did you mean" (STYLE rule 24,
after nilearn's ``_utils/param_validation``). Every place that refuses an unknown model,
dataset, subject, label, parameter or setting builds its hint here, so the wording and the
closeness threshold are the same everywhere."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["close_matches", "did_you_mean", "check_choice"]

#: How close a typed name must be to an allowed one to be suggested (difflib's ratio).
CUTOFF = 0.6


def close_matches(
    value: Any, options: Iterable[Any], n: int = 1, cutoff: float = CUTOFF
) -> list[str]:
    """The ``n`` allowed names closest to ``value`` (as strings), best first; may be empty."""
    return difflib.get_close_matches(str(value), [str(o) for o in options], n=n, cutoff=cutoff)


def did_you_mean(value: Any, options: Iterable[Any], n: int = 1, cutoff: float = CUTOFF) -> str:
    """``" (did you mean 'x'?)"`` (or ``'x' or 'y'`` for ``n`` > 1) when a close name exists,
    else ``""`` — to append to an error message."""
    near = close_matches(value, options, n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in near)}?)" if near else ""


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; else raise ``ValueError`` naming the
    parameter, the value, the allowed values and the closest one."""
    allowed = list(allowed)
    if value in allowed:
        return value
    raise ValueError(f"{name}={value!r}: expected one of {allowed}{did_you_mean(value, allowed)}")
