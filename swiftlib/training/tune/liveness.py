"""Dead workers: how a study notices that the process running a trial is gone, so that the
trial is failed (and replaced) instead of counting as running forever.

Each running trial records its worker (``host:pid``, user attribute ``worker``). Then, per
storage (:class:`Liveness`):

- **RDB storages** (SQLite file, PostgreSQL/MySQL URL) keep heartbeats themselves. swiftlib
  opens them with Optuna's public ``RDBStorage(heartbeat_interval=, grace_period=,
  heartbeat_stale_trial_callback=)``; ``Study.optimize`` records the heartbeat, and
  :func:`optuna.storages.fail_stale_trials` fails a trial silent for ``grace_period``.
- **Journal files** (what SLURM array workers share) have no heartbeat in Optuna
  (optuna 5.0: ``JournalStorage`` has no ``get_heartbeat_interval``, and
  ``fail_stale_trials`` returns without doing anything for it). For them, and only for
  them, swiftlib keeps its own check, all of it in this module: a thread writes
  ``time.time()`` to the trial's ``heartbeat`` user attribute every ``interval`` seconds,
  and :func:`fail_stale_trials` fails (through the public ``Study.tell``) a running trial
  whose process no longer exists (same host) or whose heartbeat is older than the grace
  period. Should Optuna's journal storage gain a heartbeat, :func:`storage_records_heartbeats`
  sees it and this check stops being used.

Either way a failed trial's reason is kept in the study's user attribute ``error:trial-N``
and its run directory gets a failed ``results.json``, so a killed worker loses at most the
trial it was running.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from swiftlib.results import save_results
from swiftlib.training.tune.errors import TuneError

__all__ = [
    "DEFAULT_GRACE_INTERVALS",
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "Heartbeat",
    "Liveness",
    "fail_stale_trials",
    "record_stale_trial",
    "stale_reason_key",
    "storage_records_heartbeats",
    "worker_id",
]

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 60.0
#: Default grace period, in heartbeat intervals.
DEFAULT_GRACE_INTERVALS = 5
#: How long leaving a trial waits for its heartbeat thread.
HEARTBEAT_JOIN_TIMEOUT_S = 5.0
#: Optuna's RDB heartbeat counts whole seconds.
MIN_RDB_SECONDS = 1
WORKER_ATTR = "worker"  # trial user attribute: host:pid of the process running it
HEARTBEAT_ATTR = "heartbeat"  # trial user attribute: swiftlib's own heartbeat (journal files)


def worker_id() -> str:
    """This process, as ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_reason_key(number: int) -> str:
    """The study user attribute that keeps why trial ``number`` was failed as stale."""
    return f"error:trial-{number}"


def _check_seconds(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise TuneError(f"{name}={value!r}: expected a number of seconds > 0")


@dataclass(frozen=True)
class Heartbeat:
    """How often a running trial says it is alive, and how long a silent one counts as
    alive (``grace_period``, default :data:`DEFAULT_GRACE_INTERVALS` intervals)."""

    interval: float = DEFAULT_HEARTBEAT_INTERVAL_S
    grace_period: float | None = None

    def __post_init__(self):
        _check_seconds("heartbeat_interval", self.interval)
        if self.grace_period is not None:
            _check_seconds("grace_period", self.grace_period)

    @property
    def grace(self) -> float:
        if self.grace_period is not None:
            return float(self.grace_period)
        return DEFAULT_GRACE_INTERVALS * float(self.interval)

    def rdb_options(self) -> dict:
        """Keyword arguments of ``optuna.storages.RDBStorage`` (whole seconds, rounded up)."""
        interval = max(MIN_RDB_SECONDS, math.ceil(self.interval))
        grace = max(MIN_RDB_SECONDS, math.ceil(self.grace))
        reason = f"no heartbeat from its worker for more than {grace} s"
        # a partial of a module function, not a closure: the storage must stay picklable
        return {
            "heartbeat_interval": interval,
            "grace_period": grace,
            "heartbeat_stale_trial_callback": functools.partial(record_stale_trial, reason=reason),
        }


def storage_records_heartbeats(storage) -> bool:
    """Whether ``storage`` keeps trial heartbeats itself (Optuna's public
    ``get_heartbeat_interval()``, e.g. an RDBStorage opened with ``heartbeat_interval``)."""
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    return callable(get_interval) and get_interval() is not None


def record_stale_trial(study, trial: FrozenTrial, reason: str) -> None:
    """After ``trial`` was failed as stale: keep ``reason`` in the study, give its run
    directory a failed ``results.json`` (unless it has one) and log it. Also the
    ``heartbeat_stale_trial_callback`` of RDB storages that swiftlib opens."""
    key = stale_reason_key(trial.number)
    if study.user_attrs.get(key) is None:
        study.set_user_attr(key, f"stale: {reason}")
    log.warning("trial %d marked failed (%s); the study continues without it", trial.number, reason)
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir and Path(run_dir).is_dir() and not (Path(run_dir) / "results.json").exists():
        save_results(
            run_dir,
            "finetune",
            status="failed",
            error=f"worker died: {reason}",
            extra={"optuna": {"study": study.study_name, "trial": trial.number, "state": "FAIL"}},
        )


# ---------------------------------------------------------------------------------------
# swiftlib's own check, for storages without a heartbeat of their own (journal files)
# ---------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _stale_reason(trial: FrozenTrial, host: str, now: float, grace_period: float) -> str | None:
    worker = str(trial.user_attrs.get(WORKER_ATTR) or "")
    worker_host, _, pid = worker.rpartition(":")
    if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
        return f"worker {worker} is gone"
    last = trial.user_attrs.get(HEARTBEAT_ATTR)
    if last is None:  # not started its heartbeat yet
        last = trial.datetime_start.timestamp() if trial.datetime_start else now
    silent = now - float(last)
    if silent > grace_period:
        return f"no heartbeat from worker {worker or '?'} for {silent:.0f} s"
    return None


def fail_stale_trials(study, grace_period: float, own_heartbeat_only: bool = False) -> list[int]:
    """swiftlib's own liveness check, for storages without a heartbeat of their own: mark
    failed the running trials whose worker is gone (same host and the process no longer
    exists) or that wrote no heartbeat for ``grace_period`` seconds. ``own_heartbeat_only``:
    look only at trials that carry swiftlib's heartbeat (on a storage whose own heartbeat
    covers the others). Returns the numbers of the trials failed here."""
    host, now, failed = socket.gethostname(), time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if own_heartbeat_only and HEARTBEAT_ATTR not in trial.user_attrs:
            continue
        reason = _stale_reason(trial, host, now, grace_period)
        if reason is None:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile: another worker failed it first, or it ended
        failed.append(trial.number)
        record_stale_trial(study, trial, reason)
    return failed


class _HeartbeatThread:
    """Write ``time.time()`` to the trial's ``heartbeat`` user attribute every ``interval``
    seconds, from a daemon thread, while the ``with`` block runs."""

    def __init__(self, trial, interval: float):
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"heartbeat-{trial.number}"
        )

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.trial.set_user_attr(HEARTBEAT_ATTR, time.time())
            except Exception as e:  # the trial finished meanwhile, storage hiccup: not fatal
                log.debug("heartbeat of trial %d: %s", self.trial.number, e)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_JOIN_TIMEOUT_S)


# ---------------------------------------------------------------------------------------
# The one switch between Optuna's heartbeat and swiftlib's own check
# ---------------------------------------------------------------------------------------


class Liveness:
    """Heartbeats and the stale-trial check for one storage: Optuna's own where the storage
    keeps heartbeats (:func:`storage_records_heartbeats`), swiftlib's where it does not."""

    def __init__(self, storage, heartbeat: Heartbeat):
        self.heartbeat = heartbeat
        self.optuna_heartbeat = storage_records_heartbeats(storage)

    @contextmanager
    def beating(self, trial) -> Iterator[None]:
        """Around a trial's work: record its worker, and beat where Optuna does not."""
        trial.set_user_attr(WORKER_ATTR, worker_id())
        if self.optuna_heartbeat:  # Study.optimize runs Optuna's heartbeat thread
            yield
            return
        trial.set_user_attr(HEARTBEAT_ATTR, time.time())
        with _HeartbeatThread(trial, self.heartbeat.interval):
            yield

    def fail_stale_trials(self, study) -> list[int]:
        """Fail the study's trials whose worker died; their numbers."""
        if not self.optuna_heartbeat:
            return fail_stale_trials(study, self.heartbeat.grace)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            # marked experimental (Optuna 2.9); the warning would fill notebook and worker logs
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # records them: record_stale_trial
        failed = [
            t.number
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.number in running
        ]
        # trials run by a worker without Optuna's heartbeat on this storage (an older swiftlib,
        # or an RDBStorage object passed without heartbeat_interval) carry swiftlib's own
        return failed + fail_stale_trials(study, self.heartbeat.grace, own_heartbeat_only=True)
