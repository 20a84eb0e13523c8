"""Training entry points: ``fit(cfg) -> RunResult`` and its configuration."""

from swiftlib.training.config import FitConfig, TrainerConfig
from swiftlib.training.fit import RunResult, TrainingError, fit

__all__ = ["FitConfig", "RunResult", "TrainerConfig", "TrainingError", "fit"]
