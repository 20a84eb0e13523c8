"""Hyper-parameter search for downstream fine-tuning with Optuna.

One function holds the whole search space (:func:`suggest`); :func:`tune` runs a study
in which every trial is one :func:`swiftlib.training.fit` call in its own run directory
(``STUDY_DIR/trial-0007/`` with its checkpoints and ``results.json``). Trials are chosen
on the **validation** split only: they never touch the test subjects. When the study
stops, the best trial's checkpoint is scored once on the test split and reported.

- Sampler: TPE, seeded (``seed`` + the worker's index, so array workers do not draw the
  same random start-up points).
- Pruning: optuna-integration's ``PyTorchLightningPruningCallback`` on the task's one
  monitored metric (:data:`swiftlib.tasks.finetune.MONITOR`, e.g. ``val/auroc``), reported
  once per epoch; the direction of the study follows the monitor.
- Storage: a SQLite file (``study.db`` or ``sqlite:///…``) for one machine, a journal file
  (``study.log`` / ``journal:…``) on a shared filesystem so SLURM array workers join one
  study, or any RDB URL. ``n_trials`` is the study's total (complete + pruned, plus other workers' running trials):
  calling :func:`tune` again resumes an interrupted study, and every worker stops once
  the study has enough trials.
- Dead workers: each running trial records its worker (``host:pid``) and a heartbeat; a
  trial whose process is gone (same host) or whose heartbeat is older than the grace
  period is marked failed, so a killed worker loses at most the trial it was running.

Bad input fails before any training: an empty or contradictory search space, a storage
that cannot be opened, a study of the same name that monitors another metric or label,
``n_trials`` < 1.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftlib.utils.config import ConfigError, config_from_dict, config_to_dict

__all__ = [
    "SearchSpace",
    "StudySummary",
    "TuneError",
    "StorageError",
    "suggest",
    "tune",
    "attach",
    "open_storage",
    "fail_stale_trials",
    "study_direction",
]

log = logging.getLogger(__name__)

MODES = ("linear_probe", "unfreeze", "full")
HEADS = ("linear", "mlp")
#: Study user attributes that identify what a study optimises (checked when a study is joined).
STUDY_ATTRS = ("monitor", "direction", "label", "task")
_JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class TuneError(ValueError):
    """The study cannot run as asked (search space, study settings); nothing was trained."""


class StorageError(TuneError):
    """The Optuna storage cannot be opened."""


# ---------------------------------------------------------------------------------------
# The search space
# ---------------------------------------------------------------------------------------

Range = tuple[float, float]

# name -> (low bound, high bound, high inclusive, log scale)
_CONTINUOUS = {
    "lr": (0.0, math.inf, True, True),
    "weight_decay": (0.0, math.inf, True, True),
    "layer_decay": (0.0, 1.0, True, False),
    "unfreeze_fraction": (0.0, 1.0, True, False),
    "head_dropout": (0.0, 1.0, False, False),
    "label_smoothing": (0.0, 1.0, False, False),
    "warmup_fraction": (0.0, 1.0, False, False),
}


@dataclass
class SearchSpace:
    """What :func:`suggest` may change. Each continuous dimension is ``(low, high)`` (searched),
    a number (fixed) or ``None`` (keep the base configuration's value); each categorical one
    is a tuple of choices (one choice = fixed) or ``None``. ``lr`` and ``weight_decay`` are
    searched on a log scale. ``layer_decay`` 1 means no decay; it and ``unfreeze_fraction``
    are only drawn where they matter (not for a linear probe / outside ``mode="unfreeze"``),
    and ``label_smoothing`` only for classification."""

    lr: float | Range | None = (1e-5, 3e-3)  # peak learning rate, log scale
    weight_decay: float | Range | None = (1e-4, 0.3)  # AdamW weight decay, log scale
    layer_decay: float | Range | None = (0.5, 1.0)  # layer-wise LR decay; 1 = none
    modes: tuple[str, ...] | None = MODES  # linear_probe, unfreeze, full
    unfreeze_fraction: float | Range | None = (0.1, 0.5)  # mode unfreeze: top fraction of block groups
    heads: tuple[str, ...] | None = HEADS  # linear, mlp
    head_dropout: float | Range | None = (0.0, 0.5)
    label_smoothing: float | Range | None = (0.0, 0.2)  # classification only
    batch_sizes: tuple[int, ...] | None = (8, 16, 32)  # global batch sizes
    warmup_fraction: float | Range | None = (0.0, 0.2)  # of the optimiser steps

    def __post_init__(self):
        for name, (lo_ok, hi_ok, hi_incl, logscale) in _CONTINUOUS.items():
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                if len(v) != 2:
                    raise TuneError(f"search space {name}={v!r}: expected (low, high), a number or None")
                lo, hi = float(v[0]), float(v[1])
                if lo > hi:
                    raise TuneError(f"search space {name}=({lo:g}, {hi:g}): low is above high; swap them")
                setattr(self, name, (lo, hi) if lo < hi else lo)  # (x, x) is a fixed value
                values = (lo, hi)
            else:
                setattr(self, name, float(v))
                values = (float(v),)
            positive = name in ("lr", "layer_decay", "unfreeze_fraction") or (logscale and lo_ok == 0 and len(values) == 2)
            for x in values:
                if x < lo_ok or (positive and x <= 0) or x > hi_ok or (x == hi_ok and not hi_incl):
                    where = {"lr": "> 0", "weight_decay": "≥ 0 (> 0 in a range: it is searched on a log scale)",
                             "layer_decay": "in (0, 1]", "unfreeze_fraction": "in (0, 1]"}.get(name, "in [0, 1)")
                    raise TuneError(f"search space {name}={v!r}: every value must be {where}")
        for name, valid in (("modes", MODES), ("heads", HEADS)):
            v = getattr(self, name)
            if v is None:
                continue
            v = (v,) if isinstance(v, str) else tuple(v)
            if not v:
                raise TuneError(f"search space {name}=(): no choice left; give at least one of {valid} or None "
                                "to keep the base configuration's value")
            unknown = [c for c in v if c not in valid]
            if unknown or len(set(v)) != len(v):
                raise TuneError(f"search space {name}={v!r}: expected distinct choices among {valid}")
            setattr(self, name, v)
        if self.batch_sizes is not None:
            v = (self.batch_sizes,) if isinstance(self.batch_sizes, int) else tuple(self.batch_sizes)
            if not v:
                raise TuneError("search space batch_sizes=(): no choice left; give at least one or None")
            if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in v) or len(set(v)) != len(v):
                raise TuneError(f"search space batch_sizes={v!r}: expected distinct positive integers")
            self.batch_sizes = v

    def searched(self, task: str = "classification", base_mode: str = "full") -> list[str]:
        """Names of the dimensions that vary (for ``task``, and ``base_mode`` when ``modes`` is None)."""
        out = [n for n in _CONTINUOUS if isinstance(getattr(self, n), tuple)]
        modes = self.modes or (base_mode,)
        if task != "classification" and "label_smoothing" in out:
            out.remove("label_smoothing")
        if "unfreeze" not in modes and "unfreeze_fraction" in out:
            out.remove("unfreeze_fraction")
        if modes == ("linear_probe",) and "layer_decay" in out:
            out.remove("layer_decay")
        out += [n for n in ("modes", "heads", "batch_sizes") if getattr(self, n) is not None and len(getattr(self, n)) > 1]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpace:
        """From plain values (notebook parameters, YAML): a continuous dimension may be a
        list ``[low, high]``, ``[value]`` (fixed) or ``[]`` (keep the base value); numbers
        written as strings (YAML reads ``1e-4`` as one) are converted."""
        d = dict(d)
        for name in _CONTINUOUS:
            v = d.get(name)
            if isinstance(v, (list, tuple)):
                try:
                    v = [float(x) for x in v]
                except (TypeError, ValueError):
                    raise TuneError(f"search space {name}={d[name]!r}: expected numbers") from None
                d[name] = None if not v else v[0] if len(v) == 1 else tuple(v)
            elif isinstance(v, str):
                try:
                    d[name] = float(v)
                except ValueError:
                    raise TuneError(f"search space {name}={v!r}: expected a number or [low, high]") from None
        try:
            return config_from_dict(cls, d)
        except ConfigError as e:
            raise TuneError(f"search space: {e}") from None

    def to_dict(self) -> dict:
        return config_to_dict(self)


def _base_dict(base_cfg) -> dict:
    from swiftlib.training.config import FitConfig

    cfg = FitConfig.from_dict(base_cfg) if isinstance(base_cfg, dict) else base_cfg
    if not isinstance(cfg, FitConfig):
        raise TuneError(f"base_cfg: expected a FitConfig or a dict, got {type(base_cfg).__name__}")
    if cfg.kind != "finetune":
        raise TuneError(f"base_cfg kind={cfg.kind!r}: tuning searches fine-tuning settings; use kind='finetune'")
    return cfg.to_dict()


def suggest(trial, base_cfg, space: SearchSpace | dict | None = None) -> dict:
    """The whole search space in one place: a fit configuration (a dict) for ``trial``,
    drawn from ``space`` (default :class:`SearchSpace`) around ``base_cfg`` (a fine-tuning
    ``FitConfig`` or dict). Optuna parameter names: ``lr``, ``weight_decay``,
    ``layer_decay``, ``mode``, ``unfreeze_fraction``, ``head``, ``head_dropout``,
    ``label_smoothing``, ``batch_size``, ``warmup_fraction``."""
    space = SearchSpace() if space is None else SearchSpace.from_dict(space) if isinstance(space, dict) else space
    cfg = _base_dict(base_cfg)  # a fresh, complete dict every time
    task = cfg["task"]
    optim = task.setdefault("optim", {})

    def draw(name, value, log=False):
        if isinstance(value, tuple):
            return trial.suggest_float(name, value[0], value[1], log=log)
        return value  # fixed or None

    def choose(name, choices):
        if choices is None:
            return None
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))

    mode = choose("mode", space.modes)
    if mode is not None:
        task["mode"] = mode
    mode = task.get("mode", "full")
    if mode == "unfreeze":
        fraction = draw("unfreeze_fraction", space.unfreeze_fraction)
        if fraction is not None:
            task.update(unfreeze_fraction=fraction, unfreeze_last_k=None)
    else:
        task.update(unfreeze_fraction=None, unfreeze_last_k=None)
    for name, log_scale in (("lr", True), ("weight_decay", True), ("warmup_fraction", False)):
        v = draw(name, getattr(space, name), log=log_scale)
        if v is not None:
            optim[name] = v
    if mode != "linear_probe":
        decay = draw("layer_decay", space.layer_decay)
        if decay is not None:
            optim["layer_decay"] = None if decay >= 1 else decay
    head = choose("head", space.heads)
    if head is not None:
        task["head"] = head
    dropout = draw("head_dropout", space.head_dropout)
    if dropout is not None:
        task["head_dropout"] = dropout
    if task.get("task", "classification") == "classification":
        smoothing = draw("label_smoothing", space.label_smoothing)
        if smoothing is not None:
            task["label_smoothing"] = smoothing
    batch = choose("batch_size", space.batch_sizes)
    if batch is not None:
        cfg["data"]["batch_size"] = int(batch)
    return cfg


def check_space(space: SearchSpace, base: dict) -> list[str]:
    """Refuse a search space that is empty for this task, or whose corners do not make a
    valid configuration (e.g. a batch size that does not divide over the devices).
    Returns the searched dimensions."""
    import itertools

    import optuna

    from swiftlib.training.config import FitConfig

    task = base["task"].get("task", "classification")
    searched = space.searched(task, base["task"].get("mode", "full"))
    if not searched:
        raise TuneError("the search space is empty: every dimension is fixed or None for this task "
                        f"({task}, mode {space.modes or base['task'].get('mode')}); give at least one "
                        "(low, high) range or several choices")
    if space.modes and "unfreeze" in space.modes and space.unfreeze_fraction is None \
            and base["task"].get("unfreeze_fraction") is None and base["task"].get("unfreeze_last_k") is None:
        raise TuneError("the search space allows mode 'unfreeze' but unfreeze_fraction is None and the base "
                        "configuration sets neither task.unfreeze_fraction nor task.unfreeze_last_k; give a range, "
                        "e.g. unfreeze_fraction=(0.1, 0.5)")
    cats = {"mode": space.modes or (None,), "head": space.heads or (None,), "batch_size": space.batch_sizes or (None,)}
    for combo in itertools.product(*cats.values()):
        for pick in (0, 1):
            params = {k: v for k, v in zip(cats, combo, strict=True) if v is not None}
            for name in _CONTINUOUS:
                v = getattr(space, name)
                if isinstance(v, tuple):
                    params[name] = v[pick]
            trial = optuna.trial.FixedTrial(params)
            try:
                FitConfig.from_dict(suggest(trial, base, space))
            except (ValueError, TypeError) as e:
                shown = {k: params[k] for k in ("mode", "head", "batch_size") if k in params}
                raise TuneError(f"the search space contradicts the base configuration at {shown}: {e}") from None
    return searched


# ---------------------------------------------------------------------------------------
# Storage and study
# ---------------------------------------------------------------------------------------

def open_storage(storage) -> tuple[Any, str]:
    """``(storage object, description)`` for a SQLite/journal file path, an RDB URL
    (``sqlite:///…``, ``postgresql://…``), ``journal:PATH`` or an Optuna storage object.
    Raises :class:`StorageError` with what was given and what is accepted."""
    import optuna

    if isinstance(storage, optuna.storages.BaseStorage):
        return storage, type(storage).__name__
    text = str(storage)
    accepted = ("a SQLite file (study.db), a journal file for shared filesystems (study.log, or journal:PATH), "
                "or an RDB URL (sqlite:///path/study.db, postgresql://…)")
    if text.startswith("journal:") or (("://" not in text) and Path(text).suffix in _JOURNAL_SUFFIXES):
        path = Path(text.removeprefix("journal:")).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path))), f"journal:{path}"
        except OSError as e:
            raise StorageError(f"storage {text!r}: cannot open the journal file {str(path)!r} ({e}); "
                               "give a writable path (on a filesystem every worker sees)") from None
    if "://" not in text:
        path = Path(text).expanduser()
        if path.suffix not in _SQLITE_SUFFIXES:
            raise StorageError(f"storage {text!r}: not a recognised storage; expected {accepted}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"storage {text!r}: cannot create the folder of the SQLite file ({e})") from None
        text = f"sqlite:///{path.resolve()}"
    try:
        return optuna.storages.RDBStorage(text), text
    except ImportError as e:
        raise StorageError(f"storage {text!r}: the database driver is not installed ({e})") from None
    except Exception as e:  # sqlalchemy's errors (bad URL, unreachable server, unwritable file)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f"storage {text!r} cannot be opened: {first}; expected {accepted}") from None


def study_direction(monitor_mode: str) -> str:
    return {"max": "maximize", "min": "minimize"}[monitor_mode]


def _open_study(storage, study_name: str, expected: dict, sampler=None, pruner=None, create: bool = True):
    """Create the study or join it; refuse one that monitors something else."""
    import optuna

    if not study_name or not isinstance(study_name, str):
        raise TuneError(f"study_name={study_name!r}: expected a non-empty name")
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        if not create:
            raise TuneError(f"no study {study_name!r} in this storage; studies there: {sorted(names) or 'none'}")
        study = optuna.create_study(storage=storage, study_name=study_name, direction=expected["direction"],
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    else:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    if len(study.directions) != 1:
        raise TuneError(f"study {study_name!r} is multi-objective; swiftlib studies optimise one monitored metric")
    have = {k: study.user_attrs.get(k) for k in STUDY_ATTRS}
    have["direction"] = study.direction.name.lower()
    if expected:
        diff = {k: (have[k], v) for k, v in expected.items() if have.get(k) is not None and have[k] != v}
        if diff:
            what = "; ".join(f"{k}: the study has {a!r}, this run {b!r}" for k, (a, b) in diff.items())
            raise TuneError(f"study {study_name!r} already exists with other settings ({what}); use another "
                            "study_name (or storage) for a different experiment")
        for k, v in expected.items():
            if study.user_attrs.get(k) is None and k != "direction":
                study.set_user_attr(k, v)
    return study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_stale_trials(study, grace_period: float) -> list[int]:
    """Mark failed the RUNNING trials whose worker is gone: same host and the process no
    longer exists, or no heartbeat for ``grace_period`` seconds. Returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    host, now, failed = socket.gethostname(), time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker") or "")
        beat = t.user_attrs.get("heartbeat")
        whost, _, wpid = worker.rpartition(":")
        reason = None
        if whost == host and wpid.isdigit() and not _pid_alive(int(wpid)):
            reason = f"worker {worker} is gone"
        else:
            last = beat if beat is not None else (t.datetime_start.timestamp() if t.datetime_start else now)
            if now - float(last) > grace_period:
                reason = f"no heartbeat from worker {worker or '?'} for {now - float(last):.0f} s"
        if reason is None:
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", f"stale: {reason}")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # another worker got there first
        failed.append(t.number)
        log.warning("trial %d marked failed (%s); the study continues without it", t.number, reason)
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and Path(run_dir).is_dir() and not (Path(run_dir) / "results.json").exists():
            from swiftlib.results import save_results

            save_results(run_dir, "finetune", status="failed", error=f"worker died: {reason}",
                         extra={"optuna": {"study": study.study_name, "trial": t.number, "state": "FAIL"}})
    return failed


class _Heartbeat:
    """Record ``time.time()`` in the trial's user attrs every ``interval`` seconds."""

    def __init__(self, trial, interval: float):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial.number}")

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception as e:  # the trial finished meanwhile, storage hiccup: not fatal
                log.debug("heartbeat of trial %d: %s", self.trial.number, e)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def _pruning_callback(trial, monitor: str):
    """optuna-integration's Lightning pruning callback, active while *fitting* only: ``fit``
    validates the best checkpoint again after training, which must not prune or report."""
    from lightning.pytorch.trainer.states import TrainerFn
    from optuna_integration import PyTorchLightningPruningCallback

    class FitPruning(PyTorchLightningPruningCallback):
        def on_validation_end(self, trainer, pl_module):
            if trainer.state.fn == TrainerFn.FITTING:
                super().on_validation_end(trainer, pl_module)

    return FitPruning(trial, monitor)


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------

@dataclass
class StudySummary:
    """What a study found. ``test_metrics`` are the best trial's checkpoint scored once on
    the test split (never used to choose); ``val_metrics`` its validation metrics."""

    study_name: str
    storage: str
    study_dir: Path
    monitor: str
    direction: str
    n_trials: int  # the study's target (complete + pruned)
    states: dict  # COMPLETE / PRUNED / FAIL / RUNNING / WAITING -> count
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    best_run_dir: Path | None = None
    best_checkpoint: str | None = None
    val_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    results_path: Path | None = None
    study: Any = field(default=None, repr=False)

    def trials_frame(self):
        """One row per trial: number, state, value, duration, params, run dir."""
        import pandas as pd

        rows = []
        for t in self.study.get_trials(deepcopy=False):
            rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                         "duration_s": t.duration.total_seconds() if t.duration else None,
                         **{f"params_{k}": v for k, v in t.params.items()},
                         "worker": t.user_attrs.get("worker"), "run_dir": t.user_attrs.get("run_dir"),
                         "pruned_at_epoch": max(t.intermediate_values) if t.state.name == "PRUNED"
                         and t.intermediate_values else None})
        return pd.DataFrame(rows)

    def best_trials(self, k: int = 5):
        """The ``k`` best complete trials, best first."""
        df = self.trials_frame()
        if df.empty:
            return df
        df = df[df["state"] == "COMPLETE"]
        return df.sort_values("value", ascending=self.direction == "minimize").head(k).reset_index(drop=True)

    @property
    def metrics(self) -> dict:
        """``results.json`` metrics: best trial's val/test metrics and trial counts."""
        out = {**self.val_metrics, **self.test_metrics}
        for state in ("COMPLETE", "PRUNED", "FAIL"):
            out[f"tune/num_{state.lower()}"] = float(self.states.get(state, 0))
        if self.best_trial is not None:
            out["tune/best_trial"] = float(self.best_trial)
        return out


def _states(study) -> dict:
    from collections import Counter

    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


def _test_key(number: int) -> str:
    return f"test_metrics:trial-{number}"


def _summarise(study, storage_desc: str, study_dir: Path, n_trials: int, evaluate_test: bool,
               parameters: dict | None = None, write: bool = True) -> StudySummary:
    monitor = study.user_attrs.get("monitor", "")
    summary = StudySummary(study.study_name, storage_desc, study_dir, monitor, study.direction.name.lower(),
                           n_trials, _states(study), study=study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        log.warning("study %s has no complete trial yet (%s)", study.study_name, summary.states)
    else:
        best = study.best_trial
        summary.best_trial, summary.best_value, summary.best_params = best.number, best.value, dict(best.params)
        summary.best_run_dir = Path(best.user_attrs["run_dir"]) if best.user_attrs.get("run_dir") else None
        summary.best_checkpoint = best.user_attrs.get("best_checkpoint")
        summary.val_metrics = dict(best.user_attrs.get("val_metrics") or {})
        cached = study.user_attrs.get(_test_key(best.number))
        if cached is not None:
            summary.test_metrics = dict(cached)
        elif evaluate_test and summary.best_checkpoint:
            from swiftlib.training.evaluate import evaluate_checkpoint

            log.info("scoring the best trial (%d, %s=%.4g) once on the test split", best.number, monitor, best.value)
            res = evaluate_checkpoint(summary.best_checkpoint, split="test")
            summary.test_metrics = {k: float(v) for k, v in res.metrics.items()}
            study.set_user_attr(_test_key(best.number), summary.test_metrics)
            if summary.best_run_dir is not None:
                res.predictions.to_csv(summary.best_run_dir / "predictions_test.csv", index=False)
    if write:
        from swiftlib.results import save_results

        trials_csv = study_dir / "trials.csv"
        summary.trials_frame().to_csv(trials_csv, index=False)
        summary.results_path = save_results(
            study_dir, "tune", metrics=summary.metrics, parameters=parameters or {},
            artifacts={"best_checkpoint": summary.best_checkpoint, "best_run_dir": summary.best_run_dir,
                       "trials": trials_csv},
            extra={"monitor": monitor, "direction": summary.direction, "study_name": study.study_name,
                   "storage": storage_desc, "best_params": summary.best_params, "states": summary.states})
    return summary


# ---------------------------------------------------------------------------------------
# tune / attach
# ---------------------------------------------------------------------------------------

def _check_stores(base: dict) -> None:
    paths = base["data"]["store_path"]
    for p in (paths,) if isinstance(paths, str) else paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"data.store_path {p!r} does not exist; make the store first "
                                    "(swiftlib synth / swiftlib preprocess)")


def tune(base_cfg, n_trials: int, storage=None, study_name: str = "swiftlib-tune", study_dir=None,
         space: SearchSpace | dict | None = None, timeout: float | None = None, seed: int = 0,
         pruning: bool = True, pruner=None, enqueue=(), evaluate_test: bool = True,
         worker_index: int | None = None, heartbeat_interval: float = 60.0,
         grace_period: float | None = None) -> StudySummary:
    """Run (or join, or resume) the study ``study_name`` until it has ``n_trials`` finished
    (complete + pruned) trials or ``timeout`` seconds pass; return a :class:`StudySummary`.

    Args:
        base_cfg: a fine-tuning ``FitConfig`` or dict; :func:`suggest` varies it.
        n_trials: the study's total: complete and pruned trials already in the storage count, and
            so do trials other workers are running (failed ones do not: they are replaced).
        storage: SQLite file/URL, journal file (shared filesystems, SLURM arrays), RDB URL or
            an Optuna storage; default ``STUDY_DIR/optuna.db``.
        study_dir: trial run directories go to ``STUDY_DIR/trial-NNNN/``; default
            ``base_cfg.run_dir``. It also receives ``trials.csv`` and the study's ``results.json``.
        space: :class:`SearchSpace` (or its dict); default the full space.
        seed: TPE seed; the worker's index (``worker_index``, default ``$SLURM_ARRAY_TASK_ID``
            or 0) is added so array workers draw different start-up points.
        pruning / pruner: prune on the monitored metric each epoch; default
            ``MedianPruner(n_startup_trials=3, n_warmup_steps=1)``.
        enqueue: parameter dicts to try first (e.g. a known good setting).
        evaluate_test: score the best trial's checkpoint on the test split (once per best
            trial: the result is cached in the study).
        heartbeat_interval / grace_period: a running trial writes a heartbeat this often;
            one silent for ``grace_period`` (default 5 intervals) counts as dead.
    """
    import optuna
    from optuna.trial import TrialState

    from swiftlib.tasks.finetune import MONITOR
    from swiftlib.training.fit import TrainingError, fit
    from swiftlib.utils.io import atomic_write_json, read_json

    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise TuneError(f"n_trials={n_trials!r}: expected a positive integer (the study's total number of trials)")
    if timeout is not None and not timeout > 0:
        raise TuneError(f"timeout={timeout!r}: expected seconds > 0, or None for no limit")
    base = _base_dict(base_cfg)
    space = SearchSpace() if space is None else SearchSpace.from_dict(space) if isinstance(space, dict) else space
    searched = check_space(space, base)
    task_type = base["task"].get("task", "classification")
    monitor, mode = MONITOR[task_type]
    direction = study_direction(mode)
    trainer = base["trainer"]
    study_dir = Path(study_dir or base["run_dir"]).expanduser().resolve()
    storage_obj, storage_desc = open_storage(storage if storage is not None else study_dir / "optuna.db")
    if pruning and trainer.get("devices", 1) * trainer.get("num_nodes", 1) > 1 \
            and not isinstance(storage_obj, optuna.storages.RDBStorage):
        raise TuneError("pruning a multi-device trial needs an RDB storage (SQLite/PostgreSQL URL); use one device "
                        "per trial and parallelise with workers (slurm/optuna_workers.sbatch), or pruning=False")
    _check_stores(base)
    if worker_index is None:
        worker_index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0") or 0)
    sampler = optuna.samplers.TPESampler(seed=seed + worker_index, constant_liar=True,
                                         n_startup_trials=max(2, min(10, n_trials // 2)))
    if pruning and pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    elif not pruning:
        pruner = optuna.pruners.NopPruner()
    study = _open_study(storage_obj, study_name, {"monitor": monitor, "direction": direction,
                                                   "label": base["task"]["label"], "task": task_type},
                        sampler=sampler, pruner=pruner)
    grace = grace_period if grace_period is not None else 5 * heartbeat_interval
    study_dir.mkdir(parents=True, exist_ok=True)
    fail_stale_trials(study, grace)
    for params in enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    # finished trials count, and so do other workers' running ones (they will finish or be failed as stale)
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    done = len(study.get_trials(deepcopy=False, states=counted))
    log.info("study %s (%s, %s %s): %d/%d trials finished or running, searching %s", study_name, storage_desc,
             direction, monitor, done, n_trials, ", ".join(searched))

    def enough(st, _trial):
        fail_stale_trials(st, grace)
        if len(st.get_trials(deepcopy=False, states=counted)) >= n_trials:
            st.stop()

    def objective(trial):
        cfg = suggest(trial, base, space)
        run_dir = study_dir / f"trial-{trial.number:04d}"
        cfg["run_dir"] = str(run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", _worker_id())
        trial.set_user_attr("heartbeat", time.time())
        callbacks = [_pruning_callback(trial, monitor)] if pruning else []
        info = {"study": study_name, "trial": trial.number, "params": dict(trial.params)}
        log.info("trial %d: %s", trial.number, trial.params)
        with _Heartbeat(trial, heartbeat_interval):
            try:
                res = fit(cfg, callbacks=callbacks, test=False)
            except TrainingError as e:
                if isinstance(e.__cause__, KeyboardInterrupt):  # stop the study, not just this trial
                    raise KeyboardInterrupt from e
                raise
            except optuna.TrialPruned as e:
                from swiftlib.results import save_results

                save_results(run_dir, "finetune", parameters=cfg, status="failed", error=f"pruned: {e}",
                             artifacts={"config": run_dir / "config.yaml"},
                             extra={"monitor": monitor, "optuna": {**info, "state": "PRUNED"}})
                raise
        doc = read_json(run_dir / "results.json")
        doc["optuna"] = {**info, "state": "COMPLETE"}
        atomic_write_json(run_dir / "results.json", doc)
        value = res.metrics.get(monitor)
        trial.set_user_attr("val_metrics", {k: v for k, v in res.metrics.items() if k.startswith("val/")})
        trial.set_user_attr("best_checkpoint", res.best_checkpoint)
        if value is None or not math.isfinite(value):
            log.warning("trial %d: %s is %s (too few validation subjects of each class?); marked failed",
                        trial.number, monitor, value)
            return float("nan")
        return float(value)

    remaining = n_trials - done
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(TrainingError,), callbacks=[enough],
                       gc_after_trial=True)
    else:
        log.info("study %s already has %d finished or running trials; nothing to run", study_name, done)
    params = {"study_name": study_name, "storage": storage_desc, "n_trials": n_trials, "timeout": timeout,
              "seed": seed, "worker_index": worker_index, "pruning": pruning, "space": space.to_dict(),
              "searched": searched, "base": base}
    return _summarise(study, storage_desc, study_dir, n_trials, evaluate_test, params)


def attach(storage, study_name: str, study_dir=None, evaluate_test: bool = True, write: bool = False) -> StudySummary:
    """A :class:`StudySummary` of an existing study, without running trials (e.g. to look
    at a study that SLURM workers are filling). ``write`` also writes ``trials.csv`` and
    ``results.json`` into ``study_dir``."""
    storage_obj, desc = open_storage(storage)
    study = _open_study(storage_obj, study_name, {}, create=False)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if study_dir is None:
        run_dir = complete[0].user_attrs.get("run_dir") if complete else None
        study_dir = Path(run_dir).parent if run_dir else Path(".")
    return _summarise(study, desc, Path(study_dir), finished, evaluate_test,
                      {"study_name": study_name, "storage": desc}, write=write)

