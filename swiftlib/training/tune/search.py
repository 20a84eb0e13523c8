"""Running a study: :func:`tune` runs, joins or resumes one, each trial one
:func:`swiftlib.training.fit` call in ``STUDY_DIR/trial-NNNN/``; :func:`attach` summarises
one without running anything."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from swiftlib.results import save_results
from swiftlib.tasks.finetune import MONITOR
from swiftlib.training.config import FitConfig, label_task_type
from swiftlib.training.fit import TrainingError
from swiftlib.training.tune.errors import TuneError
from swiftlib.training.tune.liveness import DEFAULT_HEARTBEAT_INTERVAL_S, Heartbeat, Liveness
from swiftlib.training.tune.pruning import FitPruning, make_pruner
from swiftlib.training.tune.space import (
    SearchSpace,
    as_search_space,
    base_config,
    check_space,
    suggest,
)
from swiftlib.training.tune.storage import open_storage, open_study, study_direction
from swiftlib.training.tune.summary import StudySummary, summarise
from swiftlib.utils.io import atomic_write_json, read_json

__all__ = ["attach", "tune"]

log = logging.getLogger(__name__)

DEFAULT_STUDY_NAME = "swiftlib-tune"
#: The storage in ``STUDY_DIR`` when none is given.
DEFAULT_STORAGE_FILE = "optuna.db"
TRIAL_DIR_FORMAT = "trial-{:04d}"
#: TPE's random start-up trials: half the study, within these bounds.
TPE_MIN_STARTUP_TRIALS = 2
TPE_MAX_STARTUP_TRIALS = 10
#: The environment variable that numbers SLURM array workers.
SLURM_ARRAY_TASK_ENV = "SLURM_ARRAY_TASK_ID"
#: States that count towards ``n_trials``: finished trials, and other workers' running ones
#: (they finish, or are failed as stale and then no longer count).
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def _counted(study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def _check_limits(n_trials, timeout) -> None:
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise TuneError(
            f"n_trials={n_trials!r}: expected a positive integer (the study's total "
            "number of trials)"
        )
    if timeout is not None and not timeout > 0:
        raise TuneError(f"timeout={timeout!r}: expected seconds > 0, or None for no limit")


def _check_stores(base: dict) -> None:
    paths = base["data"]["store_path"]
    for p in (paths,) if isinstance(paths, str) else paths:
        if not Path(p).exists():
            raise FileNotFoundError(
                f"data.store_path {p!r} does not exist; make the store first "
                "(swiftlib synth / swiftlib preprocess)"
            )


def _check_pruning_storage(base: dict, storage, pruning: bool) -> None:
    trainer = base["trainer"]
    devices = trainer.get("devices", 1) * trainer.get("num_nodes", 1)
    if pruning and devices > 1 and not isinstance(storage, optuna.storages.RDBStorage):
        raise TuneError(
            "pruning a multi-device trial needs an RDB storage (SQLite/PostgreSQL "
            "URL); use one device per trial and parallelise with workers "
            "(slurm/optuna_workers.sbatch), or pruning=False"
        )


def _sampler(seed: int, worker_index: int, n_trials: int) -> optuna.samplers.BaseSampler:
    startup = max(TPE_MIN_STARTUP_TRIALS, min(TPE_MAX_STARTUP_TRIALS, n_trials // 2))
    return optuna.samplers.TPESampler(
        seed=seed + worker_index, constant_liar=True, n_startup_trials=startup
    )


@dataclass
class _Objective:
    """One trial: a configuration from :func:`suggest`, one ``fit`` without the test split,
    the monitored validation metric returned (NaN: the trial is marked failed)."""

    base: dict
    space: SearchSpace
    study_name: str
    study_dir: Path
    monitor: str
    pruning: bool
    liveness: Liveness

    def __call__(self, trial) -> float:
        from swiftlib.training.fit import fit  # looked up per trial: tests replace it

        cfg = suggest(trial, self.base, self.space)
        run_dir = self.study_dir / TRIAL_DIR_FORMAT.format(trial.number)
        cfg["run_dir"] = str(run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        callbacks = [FitPruning(trial, self.monitor)] if self.pruning else []
        info = {"study": self.study_name, "trial": trial.number, "params": dict(trial.params)}
        log.info("trial %d: %s", trial.number, trial.params)
        with self.liveness.beating(trial):
            try:
                res = fit(cfg, callbacks=callbacks, test=False)
            except TrainingError as e:
                if isinstance(e.__cause__, KeyboardInterrupt):  # stop the study, not the trial
                    raise KeyboardInterrupt from e
                raise
            except optuna.TrialPruned as e:
                save_results(
                    run_dir,
                    "finetune",
                    parameters=cfg,
                    status="failed",
                    error=f"pruned: {e}",
                    artifacts={"config": run_dir / "config.yaml"},
                    extra={"monitor": self.monitor, "optuna": {**info, "state": "PRUNED"}},
                )
                raise
        doc = read_json(run_dir / "results.json")
        doc["optuna"] = {**info, "state": "COMPLETE"}
        atomic_write_json(run_dir / "results.json", doc)
        value = res.metrics.get(self.monitor)
        val_metrics = {k: v for k, v in res.metrics.items() if k.startswith("val/")}
        trial.set_user_attr("val_metrics", val_metrics)
        trial.set_user_attr("best_checkpoint", res.best_checkpoint)
        if value is None or not math.isfinite(value):
            log.warning(
                "trial %d: %s is %s (too few validation subjects of each class?); marked failed",
                trial.number,
                self.monitor,
                value,
            )
            return float("nan")
        return float(value)


def tune(
    base_cfg,
    n_trials: int,
    storage=None,
    study_name: str = DEFAULT_STUDY_NAME,
    study_dir=None,
    space: SearchSpace | dict | None = None,
    timeout: float | None = None,
    seed: int = 0,
    pruning: bool = True,
    pruner=None,
    enqueue=(),
    evaluate_test: bool = True,
    worker_index: int | None = None,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    grace_period: float | None = None,
) -> StudySummary:
    """Run (or join, or resume) the study ``study_name`` until it has ``n_trials`` finished
    (complete + pruned) trials or ``timeout`` seconds pass; return a :class:`StudySummary`.

    Args:
        base_cfg: a fine-tuning ``FitConfig`` or dict; :func:`suggest` varies it.
        n_trials: the study's total: complete and pruned trials already in the storage count,
            and so do trials other workers are running (failed ones do not: they are replaced).
        storage: SQLite file/URL, journal file (shared filesystems, SLURM arrays), RDB URL or
            an Optuna storage; default ``STUDY_DIR/optuna.db``.
        study_dir: trial run directories go to ``STUDY_DIR/trial-NNNN/``; default
            ``base_cfg.run_dir``. It also receives ``trials.csv`` and the study's
            ``results.json``.
        space: :class:`SearchSpace` (or its dict); default the full space.
        seed: TPE seed; the worker's index (``worker_index``, default ``$SLURM_ARRAY_TASK_ID``
            or 0) is added so array workers draw different start-up points.
        pruning / pruner: prune on the monitored metric each epoch; default
            ``MedianPruner(n_startup_trials=3, n_warmup_steps=1)``.
        enqueue: parameter dicts to try first (e.g. a known good setting).
        evaluate_test: score the best trial's checkpoint on the test split (once per best
            trial: the result is cached in the study).
        heartbeat_interval / grace_period: a running trial records a heartbeat this often; one
            silent for ``grace_period`` (default 5 intervals) counts as dead and is failed.
            SQLite/RDB storages use Optuna's heartbeat (whole seconds, rounded up); on a journal
            file a trial whose process is gone from this host is failed at once
            (:mod:`swiftlib.training.tune.liveness`).
    """
    _check_limits(n_trials, timeout)
    heartbeat = Heartbeat(heartbeat_interval, grace_period)
    base = base_config(base_cfg)
    # task "auto": the type the store declares, fixed for every trial (monitor, search space)
    task_type = base["task"]["task"] = label_task_type(FitConfig.from_dict(base))
    space = as_search_space(space)
    searched = check_space(space, base)
    monitor, mode = MONITOR[task_type]
    direction = study_direction(mode)
    study_dir = Path(study_dir or base["run_dir"]).expanduser().resolve()
    if storage is None:
        storage = study_dir / DEFAULT_STORAGE_FILE
    storage_obj, storage_desc = open_storage(storage, heartbeat)
    _check_pruning_storage(base, storage_obj, pruning)
    _check_stores(base)
    if worker_index is None:
        worker_index = int(os.environ.get(SLURM_ARRAY_TASK_ENV, "0") or 0)
    expected = {
        "monitor": monitor,
        "direction": direction,
        "label": base["task"]["label"],
        "task": task_type,
    }
    sampler = _sampler(seed, worker_index, n_trials)
    study = open_study(
        storage_obj, study_name, expected, sampler=sampler, pruner=make_pruner(pruning, pruner)
    )
    liveness = Liveness(storage_obj, heartbeat)
    study_dir.mkdir(parents=True, exist_ok=True)
    liveness.fail_stale_trials(study)
    for params in enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    done = _counted(study)
    log.info(
        "study %s (%s, %s %s): %d/%d trials finished or running, searching %s",
        study_name,
        storage_desc,
        direction,
        monitor,
        done,
        n_trials,
        ", ".join(searched),
    )

    def enough(st, _trial):
        liveness.fail_stale_trials(st)
        if _counted(st) >= n_trials:
            st.stop()

    def report(_st, trial):
        # one rounded line per trial instead of Optuna's coloured INFO record with every
        # float at full precision (held back below)
        value = "-" if trial.value is None else f"{trial.value:.3f}"
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in trial.params.items()}
        log.info(
            "trial %d %s: %s %s, %s", trial.number, trial.state.name.lower(), monitor, value, shown
        )

    objective = _Objective(base, space, study_name, study_dir, monitor, pruning, liveness)
    if done < n_trials:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study.optimize(
                objective,
                n_trials=n_trials - done,
                timeout=timeout,
                catch=(TrainingError,),
                callbacks=[enough, report],
                gc_after_trial=True,
            )
        finally:
            optuna.logging.set_verbosity(verbosity)
    else:
        log.info(
            "study %s already has %d finished or running trials; nothing to run", study_name, done
        )
    params = {
        "study_name": study_name,
        "storage": storage_desc,
        "n_trials": n_trials,
        "timeout": timeout,
        "seed": seed,
        "worker_index": worker_index,
        "pruning": pruning,
        "space": space.to_dict(),
        "searched": searched,
        "base": base,
    }
    return summarise(study, storage_desc, study_dir, n_trials, evaluate_test, params)


def attach(
    storage, study_name: str, study_dir=None, evaluate_test: bool = True, write: bool = False
) -> StudySummary:
    """A :class:`StudySummary` of an existing study, without running trials (e.g. to look
    at a study that SLURM workers are filling). ``write`` also writes ``trials.csv`` and
    ``results.json`` into ``study_dir`` (default: the folder of the trials' run dirs)."""
    storage_obj, desc = open_storage(storage)
    study = open_study(storage_obj, study_name, {}, create=False)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
    if study_dir is None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        run_dir = complete[0].user_attrs.get("run_dir") if complete else None
        study_dir = Path(run_dir).parent if run_dir else Path(".")
    return summarise(
        study,
        desc,
        Path(study_dir),
        finished,
        evaluate_test,
        {"study_name": study_name, "storage": desc},
        write=write,
    )
