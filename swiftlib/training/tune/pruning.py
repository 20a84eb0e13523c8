"""Pruning: a trial reports the task's monitored metric at each training epoch's validation,
and Optuna stops the trials that fall behind."""

from __future__ import annotations

import optuna
from lightning.pytorch.trainer.states import TrainerFn
from optuna_integration import PyTorchLightningPruningCallback

__all__ = [
    "FitPruning",
    "PRUNER_STARTUP_TRIALS",
    "PRUNER_WARMUP_EPOCHS",
    "default_pruner",
    "make_pruner",
]

#: Trials that run to the end before the median pruner judges any.
PRUNER_STARTUP_TRIALS = 3
#: Epochs of a trial before it can be pruned.
PRUNER_WARMUP_EPOCHS = 1


def default_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS
    )


def make_pruner(pruning: bool, pruner=None) -> optuna.pruners.BasePruner:
    """``pruner`` (default :func:`default_pruner`), or one that never prunes."""
    if not pruning:
        return optuna.pruners.NopPruner()
    return default_pruner() if pruner is None else pruner


class FitPruning(PyTorchLightningPruningCallback):
    """optuna-integration's Lightning pruning callback, active while *fitting* only: ``fit``
    validates the best checkpoint again after training, which must not prune or report."""

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_end(trainer, pl_module)
