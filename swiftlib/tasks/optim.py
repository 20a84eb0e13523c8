"""Optimisation shared by every task: AdamW parameter groups (no weight decay on norms,
biases, position tables, mask tokens), optional layer-wise LR decay, optional µP
(width-scaled learning rates, ``OptimConfig.mup``), and a per-step linear warm-up + cosine
schedule."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from swiftlib.utils.config import config_from_dict, config_to_dict

__all__ = [
    "OptimConfig",
    "param_groups",
    "mup_lr_multipliers",
    "build_optimizer",
    "warmup_cosine",
    "total_steps",
]

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    """AdamW + warm-up/cosine. ``layer_decay`` < 1 scales each block group's LR by
    ``layer_decay ** (depth from the top)`` (BEiT/MAE fine-tuning recipe).

    ``mup=True`` trains with µP (µTransfer): every weight whose fan-in grows with the width
    gets ``lr × base fan-in / fan-in`` (:func:`mup_lr_multipliers`), so a learning rate tuned
    at the encoder's ``mup_base_width`` carries over to wider models. The encoder must be
    built for it (``model_overrides: {mup: true}``, SwiFT v2 only) — and an encoder built with
    ``mup=True`` must be trained with ``mup=True``."""

    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on norms/biases/tables)
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float | None = None  # e.g. 0.75; None = same LR everywhere
    warmup_fraction: float = 0.1  # of the total optimiser steps
    min_lr_ratio: float = 0.01  # final LR = lr * min_lr_ratio
    # schedule length in optimiser steps; fit() sets it from the data
    total_steps: int | None = None
    mup: bool = False  # µP width-scaled LRs; needs model_overrides {mup: true} (swift_v2)

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"OptimConfig.lr={self.lr}: expected > 0")
        if self.weight_decay < 0:
            raise ValueError(f"OptimConfig.weight_decay={self.weight_decay}: expected ≥ 0")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(
                f"OptimConfig.layer_decay={self.layer_decay}: expected in (0, 1] or None"
            )
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(
                f"OptimConfig.warmup_fraction={self.warmup_fraction}: expected in [0, 1)"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"OptimConfig.min_lr_ratio={self.min_lr_ratio}: expected in [0, 1]")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"OptimConfig.total_steps={self.total_steps}: expected ≥ 1 or None")
        self.betas = tuple(float(b) for b in self.betas)
        if not isinstance(self.mup, bool):
            raise TypeError(f"OptimConfig.mup={self.mup!r}: expected true or false")

    @classmethod
    def from_dict(cls, d) -> OptimConfig:
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return config_to_dict(self)


def _layer_ids(model: nn.Module, prefix: str = "") -> tuple[dict[str, int], int]:
    """Map each parameter name to its depth group (0 = stem … n-1 = top) via the encoder's
    ``group_matcher``; parameters the matcher does not know (heads, decoders) get the top."""
    from swiftlib.models import group_parameters

    groups = group_parameters(model)
    ids = {prefix + name: g for g, names in enumerate(groups) for name in names}
    return ids, len(groups)


def _check_mup_encoder(cfg: OptimConfig, encoder: nn.Module | None) -> None:
    built = bool(getattr(getattr(encoder, "cfg", None), "mup", False))
    if cfg.mup == built:
        return
    name = type(encoder).__name__ if encoder is not None else "no encoder"
    if cfg.mup and not hasattr(encoder, "mup_base_shapes"):
        raise ValueError(
            f"optim.mup=True needs a SwiFT v2 encoder built with mup=True; this run has {name}, "
            "which has no µP parametrisation — use a swift_v2_* preset or set optim.mup: false"
        )
    if cfg.mup:
        raise ValueError(
            f"optim.mup=True but the encoder ({name}) was built with mup=False: µP learning "
            "rates need the µP attention scale and initialisation — add mup: true to "
            "model_overrides, or set optim.mup: false"
        )
    raise ValueError(
        f"the encoder ({name}) was built with mup=True but optim.mup=False: a µP model trained "
        "with standard learning rates is neither µP nor the standard parametrisation — set "
        "optim.mup: true, or drop mup from model_overrides"
    )


def _mup_base_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Base-width shapes from every outermost submodule of ``module`` that declares them
    (``mup_base_shapes()``: SwiFT v2 encoders, SimMIM), names prefixed as in ``module``."""
    shapes: dict[str, tuple[int, ...]] = {}
    covered: list[str] = []
    for name, sub in module.named_modules():
        if any(name == c or name.startswith(c + ".") for c in covered):
            continue
        if callable(getattr(sub, "mup_base_shapes", None)):
            prefix = f"{name}." if name else ""
            shapes.update({prefix + k: v for k, v in sub.mup_base_shapes().items()})
            covered.append(name)
    return shapes


def mup_lr_multipliers(module: nn.Module, encoder: nn.Module) -> dict[str, float]:
    """µP learning-rate multipliers (``base fan-in / fan-in``) for every parameter of ``module``.

    Shapes at the base width come from the submodules that declare them (the encoder, SimMIM);
    a parameter outside those — a task head — is a readout of the encoder when it is a weight
    matrix whose fan-in is the encoder's embedding width (``num_features``), else it keeps 1.
    """
    from swiftlib.models.mup import mup_width_multipliers

    _check_mup_encoder(OptimConfig(mup=True), encoder)
    base = _mup_base_shapes(module)
    named = dict(module.named_parameters())
    width_mult = encoder.embed_dim / encoder.cfg.mup_base_width
    base_features = encoder.num_features / width_mult
    for name, p in named.items():
        if name in base:
            continue
        shape = tuple(p.shape)
        if p.ndim == 2 and name.endswith("weight") and shape[1] == encoder.num_features:
            shape = (shape[0], int(round(base_features)))
            if p.shape[0] == encoder.num_features:  # a hidden width-square layer (MLP head)
                shape = (int(round(base_features)), shape[1])
        base[name] = shape
    mults = mup_width_multipliers(named.items(), base)
    return {name: 1.0 / m for name, m in mults.items()}


def param_groups(
    module: nn.Module, cfg: OptimConfig, encoder: nn.Module | None = None, encoder_prefix: str = ""
) -> list[dict]:
    """AdamW parameter groups over ``module``'s trainable parameters.

    Weight decay is off for the encoder's ``no_weight_decay()`` names and for every 1-D
    parameter (norms, biases). With ``layer_decay``, ``encoder`` (a submodule at
    ``encoder_prefix``) gives the depth of each parameter through ``group_matcher``. With
    ``cfg.mup``, each parameter's LR scale is also multiplied by its µP multiplier
    (:func:`mup_lr_multipliers`); the encoder must have been built with ``mup=True`` (and an
    encoder built so must be trained with ``cfg.mup``): a mismatch raises ``ValueError``.
    """
    _check_mup_encoder(cfg, encoder)
    mup = mup_lr_multipliers(module, encoder) if cfg.mup else {}
    no_wd: set[str] = set()
    if encoder is not None and hasattr(encoder, "no_weight_decay"):
        no_wd = {encoder_prefix + n for n in encoder.no_weight_decay()}
    ids, num_layers = ({}, 1)
    if cfg.layer_decay is not None and encoder is not None:
        ids, num_layers = _layer_ids(encoder, encoder_prefix)
    groups: dict[tuple[int, bool, float], dict] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or name in no_wd)
        layer = ids.get(name, num_layers - 1)
        scale = 1.0 if cfg.layer_decay is None else cfg.layer_decay ** (num_layers - 1 - layer)
        scale *= mup.get(name, 1.0)
        key = (layer, decay, scale)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "lr_scale": scale,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    if not groups:
        raise ValueError(
            "no trainable parameters: the whole model is frozen (check the fine-tuning mode)"
        )
    if cfg.mup:
        log.info(
            "µP: %d parameter groups, LR scales %s",
            len(groups),
            sorted({round(g["lr_scale"], 6) for g in groups.values()}),
        )
    return [groups[k] for k in sorted(groups)]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear 0→1 over ``warmup_steps``, then cosine 1→``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(groups: list[dict], cfg: OptimConfig, total_steps: int):
    """AdamW over ``groups`` and a per-step LambdaLR (Lightning scheduler dict)."""
    total_steps = max(1, int(total_steps))
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    params = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_fraction * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total_steps, warmup, cfg.min_lr_ratio)
    )
    return opt, {"scheduler": sched, "interval": "step", "frequency": 1}


def total_steps(module) -> int:
    """Optimiser steps of the run, for the LR schedule: the task config's
    ``optim.total_steps`` (``fit`` sets it from the data size — asking Lightning's
    ``estimated_stepping_batches`` would build the train loader before a resumed run restores
    its position), else Lightning's estimate."""
    steps = module.cfg.optim.total_steps
    return int(steps) if steps else int(module.trainer.estimated_stepping_batches)
