"""Hyper-parameter search for downstream fine-tuning with Optuna.

One function holds the whole search space (:func:`suggest`); :func:`tune` runs a study in
which every trial is one :func:`swiftlib.training.fit` call in its own run directory
(``STUDY_DIR/trial-0007/`` with its checkpoints and ``results.json``). Trials are chosen on
the **validation** split only: they never touch the test subjects. When the study stops,
the best trial's checkpoint is scored once on the test split and reported.

- Sampler: TPE, seeded (``seed`` + the worker's index, so array workers do not draw the
  same random start-up points).
- Pruning: optuna-integration's ``PyTorchLightningPruningCallback`` on the task's one
  monitored metric (:data:`swiftlib.tasks.finetune.MONITOR`, e.g. ``val/auroc``), reported
  once per epoch; the direction of the study follows the monitor.
- Storage: a SQLite file (``study.db`` or ``sqlite:///…``) for one machine, a journal file
  (``study.log`` / ``journal:…``) on a shared filesystem so SLURM array workers join one
  study, or any RDB URL. ``n_trials`` is the study's total (complete + pruned, plus other
  workers' running trials): calling :func:`tune` again resumes an interrupted study, and
  every worker stops once the study has enough trials.
- Dead workers: a trial whose worker stopped beating for the grace period (or, on a journal
  file, whose process is gone from this host) is marked failed, so a killed worker loses at
  most the trial it was running.

Bad input fails before any training: an empty or contradictory search space, a storage
that cannot be opened, a study of the same name that monitors another metric or label,
``n_trials`` < 1.

One job per module:

========================  ===================================================
``space``                 :class:`SearchSpace`, :func:`suggest`, :func:`check_space`
``storage``               :func:`open_storage`, :func:`open_study`, :func:`study_direction`
``liveness``              heartbeats and failing dead workers' trials
``pruning``               the Lightning pruning callback and the default pruner
``summary``               :class:`StudySummary`: best trial, test score once, results.json
``search``                :func:`tune` and :func:`attach`
========================  ===================================================
"""

from swiftlib.training.tune.errors import StorageError, TuneError
from swiftlib.training.tune.liveness import fail_stale_trials
from swiftlib.training.tune.search import attach, tune
from swiftlib.training.tune.space import HEADS, MODES, SearchSpace, check_space, suggest
from swiftlib.training.tune.storage import STUDY_ATTRS, open_storage, open_study, study_direction
from swiftlib.training.tune.summary import StudySummary

__all__ = [
    "HEADS",
    "MODES",
    "STUDY_ATTRS",
    "SearchSpace",
    "StorageError",
    "StudySummary",
    "TuneError",
    "attach",
    "check_space",
    "fail_stale_trials",
    "open_storage",
    "open_study",
    "study_direction",
    "suggest",
    "tune",
]
