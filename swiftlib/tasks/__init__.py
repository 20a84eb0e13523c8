"""LightningModules: losses, metrics and optimisers around ``swiftlib.models`` encoders."""

from swiftlib.tasks.common import (
    CheckpointError,
    ContractError,
    check_contract,
    load_encoder_weights,
)
from swiftlib.tasks.contrastive import CONTRASTIVE_MONITOR, ContrastiveConfig, ContrastiveTask
from swiftlib.tasks.finetune import MONITOR, FinetuneConfig, FinetuneTask
from swiftlib.tasks.optim import OptimConfig
from swiftlib.tasks.pretrain import PRETRAIN_MONITOR, PretrainConfig, SimMIMTask

__all__ = [
    "CONTRASTIVE_MONITOR",
    "CheckpointError",
    "ContractError",
    "ContrastiveConfig",
    "ContrastiveTask",
    "FinetuneConfig",
    "FinetuneTask",
    "MONITOR",
    "OptimConfig",
    "PRETRAIN_MONITOR",
    "PretrainConfig",
    "SimMIMTask",
    "check_contract",
    "load_encoder_weights",
]
