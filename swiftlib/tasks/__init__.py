"""LightningModules: losses, metrics and optimisers around ``swiftlib.models`` encoders.

The names below load on first use (PEP 562): ``swiftlib.tasks.common`` (checkpoint reading,
contracts) is what interpretation and evaluation need, and it must not pull in Lightning
(≈ 2 s of import on 2 cores) for a notebook that never trains.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CheckpointError": "common",
    "ContractError": "common",
    "check_contract": "common",
    "load_encoder_weights": "common",
    "CONTRASTIVE_MONITOR": "contrastive",
    "ContrastiveConfig": "contrastive",
    "ContrastiveTask": "contrastive",
    "MONITOR": "finetune",
    "FinetuneConfig": "finetune",
    "FinetuneTask": "finetune",
    "OptimConfig": "optim",
    "PRETRAIN_MONITOR": "pretrain",
    "PretrainConfig": "pretrain",
    "SimMIMTask": "pretrain",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'swiftlib.tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"swiftlib.tasks.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
