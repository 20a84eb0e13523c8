"""The errors a study raises before anything trains."""

from __future__ import annotations

__all__ = ["StorageError", "TuneError"]


class TuneError(ValueError):
    """The study cannot run as asked (search space, study settings); nothing was trained."""


class StorageError(TuneError):
    """The Optuna storage cannot be opened."""
