"""µP helpers shared by the µP-capable models (Yang et al. 2022, "Tensor Programs V", Table 3
for Adam): which parameters' fan-in grows with the width, the initialisation rescale that goes
with it, and width-scaled Adam parameter groups.

A model declares its shapes at the base width with ``mup_base_shapes() -> {name: shape}``
(:class:`~swiftlib.models.swift_v2.SwiFTv2` and :class:`~swiftlib.models.simmim.SimMIM` build
themselves at ``mup_base_width`` on the meta device, as the ``mup`` library's
``set_base_shapes`` compares a base model); everything here compares against that. The training
tasks use :func:`swiftlib.tasks.optim.param_groups` with ``OptimConfig(mup=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["mup_width_multipliers", "mup_rescale_init", "mup_param_groups"]


def _fan_in(shape: Sequence[int]) -> int:
    return math.prod(shape[1:])


def mup_width_multipliers(
    named_parameters, base_shapes: Mapping[str, Sequence[int]]
) -> dict[str, float]:
    """``{name: fan-in / base fan-in}`` for weight matrices (``*.weight``, ≥ 2-D) whose fan-in
    differs from their shape in ``base_shapes``; 1.0 for every other parameter (biases, norms,
    LayerScale, position tables, mask tokens, and input layers whose fan-in is fixed).

    Under µP with Adam these are the parameters whose learning rate is divided (and whose init
    std is divided by the square root of) the multiplier (Tensor Programs V, Table 3)."""
    mults = {}
    for name, p in named_parameters:
        if name not in base_shapes:
            raise KeyError(
                f"µP: parameter {name!r} has no base shape (base model parameters: "
                f"{len(base_shapes)}, e.g. {next(iter(base_shapes), None)!r})"
            )
        base = tuple(base_shapes[name])
        if p.ndim != len(base):
            raise ValueError(f"µP: parameter {name!r} is {p.ndim}-D here and {len(base)}-D at base")
        is_matrix = p.ndim >= 2 and name.rsplit(".", 1)[-1] == "weight"
        mults[name] = _fan_in(p.shape) / _fan_in(base) if is_matrix else 1.0
    return mults


def mup_rescale_init(module: nn.Module, base_shapes: Mapping[str, Sequence[int]]) -> None:
    """Rescale an initialisation made for the base width to µP at this width: hidden matrices
    (fan-in and fan-out grow) by ``1/√m``, readouts (fan-out fixed) by ``1/m``, where ``m``
    is :func:`mup_width_multipliers`' fan-in ratio; other parameters stay as they are."""
    mults = mup_width_multipliers(module.named_parameters(), base_shapes)
    with torch.no_grad():
        for name, p in module.named_parameters():
            m = mults[name]
            if m != 1.0:
                p.mul_(1.0 / m if p.shape[0] == base_shapes[name][0] else m**-0.5)


def mup_param_groups(model: nn.Module, lr: float, weight_decay: float = 0.05) -> list[dict]:
    """Adam parameter groups for µP: weights whose fan-in grows with the width (hidden matrices,
    patch merging, the classifier) get ``lr × base fan-in / fan-in`` (``lr ×
    mup_base_width / embed_dim``); vectors, tables and the patch embedding keep ``lr``.
    Parameters in ``model.no_weight_decay()`` get no decay. The training tasks use
    :func:`swiftlib.tasks.optim.param_groups` with ``OptimConfig(mup=True)``, which applies
    the same rule to their heads and decoders too."""
    mults = mup_width_multipliers(model.named_parameters(), model.mup_base_shapes())
    no_wd = model.no_weight_decay()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (lr / mults[name], 0.0 if name in no_wd else weight_decay)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": k[0], "weight_decay": k[1]} for k, ps in groups.items()]
