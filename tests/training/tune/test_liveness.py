"""swiftlib.training.tune.liveness without training: which trials count as dead on a journal
file (swiftlib's own check) and on SQLite (Optuna's heartbeat), the race of two workers
failing one trial, and a heartbeat that outlives its trial."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from swiftlib.training.tune import TuneError, fail_stale_trials
from swiftlib.training.tune.liveness import (
    Heartbeat,
    Liveness,
    stale_reason_key,
    storage_records_heartbeats,
    worker_id,
)
from swiftlib.training.tune.storage import open_storage

GRACE_S = 30.0  # long: only the trials these tests make stale are stale
FAST = Heartbeat(interval=0.05, grace_period=0.5)  # seconds
CHILD_TIMEOUT_S = 60


def _journal(path: Path):
    storage, _ = open_storage(path)
    return optuna.create_study(storage=storage, study_name="s", load_if_exists=True), storage


def _running(study, worker: str, heartbeat: float | None = None, run_dir: Path | None = None):
    trial = study.ask()
    trial.set_user_attr("worker", worker)
    if heartbeat is not None:
        trial.set_user_attr("heartbeat", heartbeat)
    if run_dir is not None:
        run_dir.mkdir(parents=True)
        trial.set_user_attr("run_dir", str(run_dir))
    return trial


def _dead_pid() -> int:
    """The id of a process of this host that has exited."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout)


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_journal_has_no_optuna_heartbeat_so_swiftlibs_check_is_used(tmp_path):
    # if Optuna's journal storage gains a heartbeat, this fails: then drop the custom check
    study, storage = _journal(tmp_path / "s.log")
    assert not storage_records_heartbeats(storage)
    assert not Liveness(storage, Heartbeat()).optuna_heartbeat
    sqlite, _ = open_storage(tmp_path / "s.db", Heartbeat())
    assert storage_records_heartbeats(sqlite) and Liveness(sqlite, Heartbeat()).optuna_heartbeat
    assert not storage_records_heartbeats(open_storage(tmp_path / "plain.db")[0])


def test_journal_fails_a_gone_process_and_a_silent_worker_only(tmp_path):
    study, _ = _journal(tmp_path / "s.log")
    host, now = socket.gethostname(), time.time()
    gone_dir = tmp_path / "trial-0000"
    _running(study, f"{host}:{_dead_pid()}", now, gone_dir)  # 0: its process exited
    _running(study, worker_id(), now)  # 1: this process, beating
    _running(study, "elsewhere:1", now)  # 2: another host, beating
    _running(study, "elsewhere:2", now - 2 * GRACE_S)  # 3: another host, silent
    _running(study, worker_id())  # 4: just started: judged by its start time
    assert fail_stale_trials(study, GRACE_S) == [0, 3]
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "RUNNING", "RUNNING", "FAIL", "RUNNING"]
    assert study.user_attrs[stale_reason_key(0)].startswith(f"stale: worker {host}:")
    assert study.user_attrs[stale_reason_key(3)].startswith(
        "stale: no heartbeat from worker elsewhere:2 for 60 s"
    )
    doc = _results(gone_dir)
    assert doc["status"] == "failed" and doc["error"].startswith("worker died: worker")
    assert doc["optuna"] == {"study": "s", "trial": 0, "state": "FAIL"}
    # a second look (this or another worker) finds nothing new
    assert fail_stale_trials(study, GRACE_S) == []


class _StaleView:
    """A study whose list of trials was read before another worker failed one of them."""

    def __init__(self, study, trials):
        self._study, self._trials = study, trials

    def get_trials(self, deepcopy=False, states=None):
        return [t for t in self._trials if states is None or t.state in states]

    def __getattr__(self, name):
        return getattr(self._study, name)


def test_two_workers_failing_one_trial_record_it_once(tmp_path):
    study, _ = _journal(tmp_path / "s.log")
    _running(study, f"{socket.gethostname()}:{_dead_pid()}", time.time(), tmp_path / "t0")
    # the second worker's handle on the same journal file, with its view from before
    other = optuna.load_study(study_name="s", storage=open_storage(tmp_path / "s.log")[0])
    seen_before = other.get_trials(deepcopy=True)
    assert fail_stale_trials(study, GRACE_S) == [0]
    first = _results(tmp_path / "t0")
    # Study.tell refuses the finished trial: skipped, nothing written twice, no error
    assert fail_stale_trials(_StaleView(other, seen_before), GRACE_S) == []
    assert _results(tmp_path / "t0") == first
    assert [t.state.name for t in other.get_trials()] == ["FAIL"]


def test_heartbeat_thread_keeps_a_journal_trial_alive_and_survives_its_end(tmp_path, caplog):
    study, storage = _journal(tmp_path / "s.log")
    other = optuna.load_study(study_name="s", storage=open_storage(tmp_path / "s.log")[0])
    trial = study.ask()
    liveness = Liveness(storage, FAST)
    caplog.set_level(logging.DEBUG, logger="swiftlib.training.tune.liveness")
    with liveness.beating(trial):
        assert trial.user_attrs["worker"] == worker_id() and "heartbeat" in trial.user_attrs
        time.sleep(3 * FAST.grace)  # longer than the grace: only the heartbeat keeps it alive
        assert liveness.fail_stale_trials(other) == []
        study.tell(trial, 1.0)  # the trial ends while its heartbeat still runs
        time.sleep(4 * FAST.interval)  # the thread's writes now fail: logged, not raised
    assert "heartbeat of trial 0" in caplog.text
    assert [t.state.name for t in other.get_trials()] == ["COMPLETE"]


def test_journal_trial_without_heartbeat_goes_stale_after_the_grace(tmp_path):
    study, storage = _journal(tmp_path / "s.log")
    trial = study.ask()
    trial.set_user_attr("worker", worker_id())  # alive, but no heartbeat thread
    trial.set_user_attr("heartbeat", time.time())
    time.sleep(2 * FAST.grace)
    assert Liveness(storage, FAST).fail_stale_trials(study) == [0]
    assert study.user_attrs[stale_reason_key(0)].startswith("stale: no heartbeat from worker")


# The killed process: it runs trial 0 of the study under Optuna's heartbeat, then SIGKILLs
# itself (plain Optuna, so the child starts fast).
VICTIM = textwrap.dedent("""
    import os, signal, sys, time
    import optuna
    storage = optuna.storages.RDBStorage(sys.argv[1], heartbeat_interval=1, grace_period=1)
    study = optuna.load_study(study_name="s", storage=storage)
    def objective(trial):
        trial.set_user_attr("worker", "elsewhere:1")
        trial.set_user_attr("run_dir", sys.argv[2])
        time.sleep(0.5)  # Optuna's heartbeat thread has written its first beat
        os.kill(os.getpid(), signal.SIGKILL)
    study.optimize(objective, n_trials=1)
""")


def test_sqlite_trial_of_a_killed_process_is_failed_by_optunas_heartbeat(tmp_path):
    heartbeat = Heartbeat(interval=1, grace_period=1)
    storage, url = open_storage(tmp_path / "s.db", heartbeat)
    study = optuna.create_study(storage=storage, study_name="s")
    liveness = Liveness(storage, heartbeat)
    run_dir = tmp_path / "trial-0000"
    run_dir.mkdir()
    victim = subprocess.run(
        [sys.executable, "-c", VICTIM, url, str(run_dir)],
        timeout=CHILD_TIMEOUT_S,
        capture_output=True,
        text=True,
    )
    assert victim.returncode == -9, victim.stderr[-2000:]
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    time.sleep(heartbeat.grace + 1.5)  # SQLite's clock counts whole seconds
    assert liveness.fail_stale_trials(study) == [0]
    assert study.get_trials()[0].state.name == "FAIL"
    # recorded by the heartbeat_stale_trial_callback that open_storage installed
    assert study.user_attrs[stale_reason_key(0)] == (
        "stale: no heartbeat from its worker for more than 1 s"
    )
    assert _results(run_dir)["error"].startswith("worker died: no heartbeat")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study")
def test_sqlite_with_optuna_heartbeat_still_fails_trials_that_carry_swiftlibs_own(tmp_path):
    # a trial from a worker without Optuna's heartbeat on this storage (an older swiftlib, or
    # an RDBStorage object passed without heartbeat_interval) has no Optuna heartbeat record
    heartbeat = Heartbeat(interval=1, grace_period=1)
    storage, _ = open_storage(tmp_path / "s.db", heartbeat)
    study = optuna.create_study(storage=storage, study_name="s")
    _running(study, f"{socket.gethostname()}:{_dead_pid()}", time.time())  # 0: swiftlib's own
    study.ask().set_user_attr("worker", "elsewhere:1")  # 1: Optuna's heartbeat (none yet)
    assert Liveness(storage, heartbeat).fail_stale_trials(study) == [0]
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "RUNNING"]


def test_optuna_heartbeat_trials_carry_no_swiftlib_heartbeat(tmp_path):
    heartbeat = Heartbeat(interval=1)
    storage, _ = open_storage(tmp_path / "s.db", heartbeat)
    study = optuna.create_study(storage=storage, study_name="s")
    liveness = Liveness(storage, heartbeat)

    def objective(trial):
        with liveness.beating(trial):
            return 0.0

    study.optimize(objective, n_trials=1)
    attrs = study.trials[0].user_attrs
    assert attrs == {"worker": worker_id()}


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"interval": 0}, "heartbeat_interval=0"),
        ({"interval": True}, "heartbeat_interval=True"),
        ({"interval": 1.0, "grace_period": 0.0}, "grace_period=0.0"),
        ({"interval": float("nan")}, "heartbeat_interval=nan"),
    ],
)
def test_bad_heartbeat_settings(kw, match):
    with pytest.raises(TuneError, match=match):
        Heartbeat(**kw)


def test_rdb_options_are_whole_seconds():
    fast = Heartbeat(interval=0.2).rdb_options()
    assert (fast["heartbeat_interval"], fast["grace_period"]) == (1, 1)
    default = Heartbeat().rdb_options()
    assert (default["heartbeat_interval"], default["grace_period"]) == (60, 300)
