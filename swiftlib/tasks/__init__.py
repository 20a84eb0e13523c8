"""LightningModules: losses, metrics and optimisers around ``swiftlib.models`` encoders.

The names below load on first use (PEP 562): ``swiftlib.tasks.common`` (checkpoint reading,
contracts) is what interpretation and evaluation need, and it must not pull in Lightning
(≈ 2 s of import on 2 cores) for a notebook that never trains.
"""

from __future__ import annotations

from swiftlib.utils.lazy import lazy_exports

_EXPORTS = {
    "CheckpointError": "swiftlib.tasks.common",
    "ContractError": "swiftlib.tasks.common",
    "check_contract": "swiftlib.tasks.common",
    "load_encoder_weights": "swiftlib.tasks.common",
    "CONTRASTIVE_MONITOR": "swiftlib.tasks.contrastive",
    "ContrastiveConfig": "swiftlib.tasks.contrastive",
    "ContrastiveTask": "swiftlib.tasks.contrastive",
    "MONITOR": "swiftlib.tasks.finetune",
    "FinetuneConfig": "swiftlib.tasks.finetune",
    "FinetuneTask": "swiftlib.tasks.finetune",
    "OptimConfig": "swiftlib.tasks.optim",
    "PRETRAIN_MONITOR": "swiftlib.tasks.pretrain",
    "PretrainConfig": "swiftlib.tasks.pretrain",
    "SimMIMTask": "swiftlib.tasks.pretrain",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("swiftlib.tasks", globals(), _EXPORTS)
