"""Optimisation shared by every task: AdamW parameter groups (no weight decay on norms,
biases, position tables, mask tokens), optional layer-wise LR decay, and a per-step
linear warm-up + cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from swiftlib.utils.config import config_from_dict, config_to_dict

__all__ = ["OptimConfig", "param_groups", "build_optimizer", "warmup_cosine", "total_steps"]


@dataclass
class OptimConfig:
    """AdamW + warm-up/cosine. ``layer_decay`` < 1 scales each block group's LR by
    ``layer_decay ** (depth from the top)`` (BEiT/MAE fine-tuning recipe)."""

    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on norms/biases/tables)
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float | None = None  # e.g. 0.75; None = same LR everywhere
    warmup_fraction: float = 0.1  # of the total optimiser steps
    min_lr_ratio: float = 0.01  # final LR = lr * min_lr_ratio
    # schedule length in optimiser steps; fit() sets it from the data
    total_steps: int | None = None

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


def param_groups(
    module: nn.Module, cfg: OptimConfig, encoder: nn.Module | None = None, encoder_prefix: str = ""
) -> list[dict]:
    """AdamW parameter groups over ``module``'s trainable parameters.

    Weight decay is off for the encoder's ``no_weight_decay()`` names and for every 1-D
    parameter (norms, biases). With ``layer_decay``, ``encoder`` (a submodule at
    ``encoder_prefix``) gives the depth of each parameter through ``group_matcher``.
    """
    no_wd: set[str] = set()
    if encoder is not None and hasattr(encoder, "no_weight_decay"):
        no_wd = {encoder_prefix + n for n in encoder.no_weight_decay()}
    ids, num_layers = ({}, 1)
    if cfg.layer_decay is not None and encoder is not None:
        ids, num_layers = _layer_ids(encoder, encoder_prefix)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or name in no_wd)
        layer = ids.get(name, num_layers - 1)
        scale = 1.0 if cfg.layer_decay is None else cfg.layer_decay ** (num_layers - 1 - layer)
        key = (layer, decay)
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
