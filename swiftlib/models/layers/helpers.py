"""Small helpers shared by the model files: per-axis tuples, input-grid checks, init."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from torch import nn

__all__ = [
    "AXES",
    "to_ntuple",
    "format_grid",
    "check_input_grid",
    "grid_padding",
    "init_weights",
    "param_count",
]

#: Axis names of a volume / token grid, in storage order (DESIGN §2).
AXES = ("D", "H", "W", "T")


def to_ntuple(x: int | float | Iterable, n: int, name: str = "value") -> tuple:
    """Return ``x`` as an ``n``-tuple: a scalar is repeated, a sequence must have ``n`` entries.

    >>> to_ntuple(4, 4)
    (4, 4, 4, 4)
    >>> to_ntuple([6, 6, 6, 1], 4)
    (6, 6, 6, 1)
    """
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return (x,) * n
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {x!r}")
    out = tuple(x)
    if len(out) != n:
        axes = "(" + ", ".join(AXES[:n]) + ")" if n == 4 else f"{n} entries"
        raise ValueError(f"{name} must have {n} entries {axes}, got {len(out)}: {out}")
    return out


def format_grid(shape: Sequence[int]) -> str:
    """``(96, 96, 96, 20)`` -> ``'96×96×96×20'``."""
    return "×".join(str(int(s)) for s in shape)


def grid_padding(
    shape_dhwt: Sequence[int],
    grid_multiple: Sequence[int],
    required_shape: Sequence[int | None] | None = None,
) -> tuple[int, int, int, int]:
    """Per-axis padding (voxels/frames to add) so ``shape_dhwt`` fits a model.

    Each axis is padded up to the next multiple of ``grid_multiple``; where ``required_shape``
    names an exact size (``None`` = free) that size is used instead. Raises ``ValueError``
    where an axis is already larger than its required size (padding cannot help; crop).
    """
    shape = to_ntuple(shape_dhwt, 4, "shape (D, H, W, T)")
    multiple = to_ntuple(grid_multiple, 4, "grid_multiple")
    required = to_ntuple(
        required_shape if required_shape is not None else (None,) * 4, 4, "required_shape"
    )
    pad = []
    for axis, s, m, r in zip(AXES, shape, multiple, required, strict=True):
        if r is not None:
            if s > r:
                raise ValueError(
                    f"axis {axis} has size {s} but this model requires exactly {r}; "
                    f"crop it to {r} (padding cannot shrink an axis) or build the model with a "
                    f"larger img_size"
                )
            pad.append(int(r - s))
        else:
            pad.append(int(math.ceil(s / m) * m - s))
    return tuple(pad)  # type: ignore[return-value]


def check_input_grid(
    shape: Sequence[int],
    grid_multiple: Sequence[int],
    required_shape: Sequence[int | None] | None = None,
    max_shape: Sequence[int | None] | None = None,
    in_chans: int | None = None,
    model_name: str = "model",
) -> None:
    """Validate a volume batch shape ``(B, C, D, H, W, T)`` against a model's input rule.

    The error states the rule (divisibility / exact size), the measured grid and the
    per-axis padding that would make it fit (see :func:`swiftlib.models.fit_padding`).
    """
    if len(shape) != 6:
        raise ValueError(
            f"{model_name} expects a 6-D volume batch (B, C, D, H, W, T), got {len(shape)}-D "
            f"shape {tuple(shape)}"
        )
    if in_chans is not None and shape[1] != in_chans:
        raise ValueError(
            f"{model_name} expects {in_chans} input channel(s) (axis 1 of (B, C, D, H, W, T)), "
            f"got {shape[1]}"
        )
    grid = tuple(int(s) for s in shape[2:])
    multiple = to_ntuple(grid_multiple, 4, "grid_multiple")
    required = to_ntuple(
        required_shape if required_shape is not None else (None,) * 4, 4, "required_shape"
    )
    maximum = to_ntuple(max_shape if max_shape is not None else (None,) * 4, 4, "max_shape")
    bad_multiple = [
        a
        for a, s, m, r in zip(AXES, grid, multiple, required, strict=True)
        if r is None and s % m != 0
    ]
    bad_required = [
        a for a, s, r in zip(AXES, grid, required, strict=True) if r is not None and s != r
    ]
    bad_max = [a for a, s, m in zip(AXES, grid, maximum, strict=True) if m is not None and s > m]
    if not (bad_multiple or bad_required or bad_max):
        return
    rule = []
    for a, m, r, mx in zip(AXES, multiple, required, maximum, strict=True):
        if r is not None:
            rule.append(f"{a} = {r}")
        else:
            part = f"{a} divisible by {m}" if m > 1 else f"{a} any"
            if mx is not None:
                part += f" and ≤ {mx}"
            rule.append(part)
    msg = (
        f"{model_name} cannot take a {format_grid(grid)} (D×H×W×T) input: it needs "
        + ", ".join(rule)
        + "."
    )
    if bad_max:
        msg += (
            f" Axes {', '.join(bad_max)} exceed the size of the position tables; crop them "
            "or build the model with a larger img_size."
        )
    else:
        try:
            pad = grid_padding(grid, multiple, required)
            padded = tuple(s + p for s, p in zip(grid, pad, strict=True))
            msg += (
                f" Pad by (D, H, W, T) = {pad} to {format_grid(padded)} "
                "(swiftlib.models.fit_padding computes this), or crop."
            )
        except ValueError as err:
            msg += f" {err}."
    raise ValueError(msg)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """timm-style init: truncated-normal Linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def param_count(module: nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters())
