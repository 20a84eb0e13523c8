"""Optuna tuning: a 3-trial study with a pruned bad trial and one test evaluation; resume;
two concurrent worker processes on one journal file; a killed worker (journal and SQLite);
every bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import swiftlib.training.evaluate  # noqa: F401  (patched below)
from swiftlib.training.config import FitConfig
from swiftlib.training.tune import (
    SearchSpace,
    StorageError,
    TuneError,
    attach,
    suggest,
    tune,
)
from tests.conftest import tiny_fit_config

ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT_S = 300  # a worker process's whole study
START_TIMEOUT_S = 240  # until a worker's first trial is training
KILL_TIMEOUT_S = 30
POLL_S = 0.2
LOG_TAIL = 3000  # characters of a worker's log shown when it fails
# Seconds, short so that a killed worker's SQLite trial goes stale quickly (Optuna's
# heartbeat counts whole seconds).
FAST_HEARTBEAT = {"heartbeat_interval": 1.0, "grace_period": 2.0}

# Only the learning rate varies; everything else is the base configuration's (fast, and a
# learning rate of 1.0 is a trial made bad on purpose: its first epoch scores R² ≈ -600).
LR_ONLY = SearchSpace(
    lr=(1e-5, 1.0),
    weight_decay=None,
    layer_decay=None,
    modes=None,
    unfreeze_fraction=None,
    heads=None,
    head_dropout=None,
    label_smoothing=None,
    batch_sizes=None,
    warmup_fraction=None,
)


def _base(store, root: Path, **trainer) -> dict:
    """Regression on age (val/r2 is defined with 2 validation subjects), 2 one-step epochs."""
    return tiny_fit_config(
        store,
        root / "study",
        task={"label": "age", "task": "regression", "optim": {"warmup_fraction": 0.0}},
        trainer={"max_epochs": 2, "limit_train_batches": 1, "num_threads": 1, **trainer},
        data={"windows_per_subject": 1, "eval_stride_between_seq": 2.0},
    )


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_three_trial_study_prunes_the_bad_trial_and_tests_the_best_once(
    train_store, tmp_path, monkeypatch
):
    base = _base(train_store, tmp_path)
    storage = tmp_path / "study.db"
    kw = dict(
        storage=storage,
        study_name="lr",
        space=LR_ONLY,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    s = tune(base, 3, enqueue=[{"lr": 1e-4}, {"lr": 3e-4}, {"lr": 1.0}], **kw)
    assert s.states == {"COMPLETE": 2, "PRUNED": 1}
    assert s.monitor == "val/r2" and s.direction == "maximize"
    assert s.best_trial in (0, 1) and s.best_params["lr"] in (1e-4, 3e-4)
    # every trial kept its run dir and results.json; trials never touch the test split
    study_dir = tmp_path / "study"
    good = _results(study_dir / f"trial-{s.best_trial:04d}")
    assert good["status"] == "ok" and good["optuna"]["trial"] == s.best_trial
    assert "val/r2" in good["metrics"]
    assert not [k for k in good["metrics"] if k.startswith("test/")]
    pruned = _results(study_dir / "trial-0002")
    assert pruned["status"] == "failed" and pruned["error"].startswith("pruned")
    assert pruned["optuna"]["state"] == "PRUNED"
    assert s.study.trials[2].intermediate_values.keys() == {0}  # pruned after its first epoch
    # SQLite: Optuna's own heartbeat, no swiftlib heartbeat attribute
    assert all("heartbeat" not in t.user_attrs and t.user_attrs["worker"] for t in s.study.trials)
    # the best checkpoint was scored on the test split, once
    assert s.test_metrics["test/num_subjects"] == 2.0 and "test/r2" in s.test_metrics
    assert s.val_metrics["val/r2"] == pytest.approx(s.best_value)
    doc = _results(study_dir)
    assert doc["kind"] == "tune" and doc["monitor"] == "val/r2"
    assert doc["metrics"]["tune/num_pruned"] == 1.0
    assert doc["metrics"]["test/r2"] == pytest.approx(s.test_metrics["test/r2"])
    assert (study_dir / "trials.csv").read_text().count("\n") == 4
    assert len(s.best_trials(5)) == 2
    # resume a finished study: nothing runs, the cached test metrics are reused
    monkeypatch.setattr(
        sys.modules["swiftlib.training.fit"],
        "fit",
        lambda *a, **k: pytest.fail("no trial should run"),
    )
    monkeypatch.setattr(
        sys.modules["swiftlib.training.evaluate"],
        "evaluate_checkpoint",
        lambda *a, **k: pytest.fail("the test split is scored once"),
    )
    again = tune(base, 3, **kw)
    assert again.states == s.states and again.test_metrics == s.test_metrics
    seen = attach(storage, "lr")
    assert seen.best_trial == s.best_trial and seen.test_metrics == s.test_metrics


def _worker(
    tmp_path: Path, name: str, base: dict, storage: Path, n_trials: int, **extra
) -> subprocess.Popen:
    args = {
        "base": base,
        "storage": str(storage),
        "study_name": "shared",
        "study_dir": str(tmp_path / "study"),
        "n_trials": n_trials,
        "space": LR_ONLY.to_dict(),
        **extra,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(args))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.training.tune_worker", str(path)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _log_tail(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()[-LOG_TAIL:]


def test_two_concurrent_workers_share_one_journal_study(train_store, tmp_path):
    base = _base(train_store, tmp_path, max_epochs=1)
    storage = tmp_path / "shared" / "study.log"
    barrier = [str(tmp_path / "ready-0"), str(tmp_path / "ready-1")]
    procs = [
        _worker(
            tmp_path, f"w{i}", base, storage, 2, worker_index=i, barrier=barrier[i:] + barrier[:i]
        )
        for i in range(2)
    ]
    codes = [p.wait(timeout=WORKER_TIMEOUT_S) for p in procs]
    assert codes == [0, 0], [_log_tail(tmp_path, f"w{i}") for i in range(2)]
    study = optuna.load_study(
        study_name="shared",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(storage))
        ),
    )
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # one trial from each process
    assert len({t.params["lr"] for t in trials}) == 2  # different TPE seeds per worker
    for t in trials:
        assert _results(Path(t.user_attrs["run_dir"]))["status"] == "ok"


@pytest.mark.parametrize(
    "storage_name, reason",
    [
        ("study.log", "stale: worker"),  # journal: swiftlib's check sees the process is gone
        ("study.db", "stale: no heartbeat"),  # SQLite: Optuna's heartbeat, after the grace period
    ],
)
def test_killed_worker_loses_only_its_trial_and_the_study_resumes(
    train_store, tmp_path, storage_name, reason
):
    base = _base(train_store, tmp_path, max_epochs=1)
    storage = tmp_path / storage_name
    proc = _worker(tmp_path, "victim", base, storage, 2, **FAST_HEARTBEAT)
    started = tmp_path / "study" / "trial-0000" / "config.yaml"  # fit() is past its set-up
    deadline = time.time() + START_TIMEOUT_S
    while not started.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(POLL_S)
    assert started.exists(), _log_tail(tmp_path, "victim")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=KILL_TIMEOUT_S)
    if storage_name.endswith(".db"):  # Optuna's heartbeat: silent for longer than the grace
        time.sleep(FAST_HEARTBEAT["grace_period"] + 1.5)
    s = tune(
        base,
        1,
        storage=storage,
        study_name="shared",
        space=LR_ONLY,
        evaluate_test=False,
        **FAST_HEARTBEAT,
    )
    assert s.states == {"FAIL": 1, "COMPLETE": 1}
    assert s.study.trials[0].state.name == "FAIL"
    frame = s.trials_frame()
    assert frame.loc[0, "error"].startswith(reason) and frame["error"].isna()[1]
    assert _results(tmp_path / "study" / "trial-0000")["error"].startswith("worker died")
    assert s.best_trial == 1 and _results(tmp_path / "study" / "trial-0001")["status"] == "ok"


def test_suggest_draws_the_whole_space_with_conditional_dimensions(train_store, tmp_path):
    cls = tiny_fit_config(train_store, tmp_path / "c")
    reg = tiny_fit_config(train_store, tmp_path / "r", task={"label": "age", "task": "regression"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for i in range(30):
        trial = study.ask()
        cfg = FitConfig.from_dict(suggest(trial, cls if i % 2 else reg))  # every draw is valid
        p, t = trial.params, cfg.task
        seen.add(p["mode"])
        assert ("unfreeze_fraction" in p) == (p["mode"] == "unfreeze")
        assert (p["mode"] == "unfreeze") == (t.unfreeze_fraction is not None)
        assert ("layer_decay" in p) == (p["mode"] != "linear_probe")
        assert ("label_smoothing" in p) == (t.task == "classification")
        assert 1e-5 <= t.optim.lr <= 3e-3 and cfg.data.batch_size in (8, 16, 32)
        assert t.head in ("linear", "mlp")
        assert t.optim.weight_decay == p["weight_decay"]
        assert t.optim.warmup_fraction == p["warmup_fraction"]
        study.tell(trial, 0.0)
    assert seen == {"linear_probe", "unfreeze", "full"}
    fixed = suggest(
        optuna.trial.FixedTrial({"lr": 0.01}),
        cls,
        SearchSpace(
            lr=(1e-3, 1e-1),
            weight_decay=0.01,
            layer_decay=0.75,
            modes=("unfreeze",),
            unfreeze_fraction=0.2,
            heads=("mlp",),
            head_dropout=None,
            label_smoothing=None,
            batch_sizes=None,
            warmup_fraction=None,
        ),
    )
    assert fixed["task"]["mode"] == "unfreeze" and fixed["task"]["unfreeze_fraction"] == 0.2
    assert fixed["task"]["optim"]["layer_decay"] == 0.75 and fixed["task"]["head"] == "mlp"


# ---------------------------------------------------------------------------------------
# Bad input: refused before any training
# ---------------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(
        sys.modules["swiftlib.training.fit"], "fit", lambda *a, **k: pytest.fail("training started")
    )


def _fixed(**kw) -> SearchSpace:
    none = dict(
        lr=None,
        weight_decay=None,
        layer_decay=None,
        modes=None,
        unfreeze_fraction=None,
        heads=None,
        head_dropout=None,
        label_smoothing=None,
        batch_sizes=None,
        warmup_fraction=None,
    )
    return SearchSpace(**{**none, **kw})


@pytest.mark.parametrize("n_trials", [0, -2, 2.5, True])
def test_bad_n_trials(train_store, tmp_path, no_training, n_trials):
    with pytest.raises(TuneError, match="n_trials"):
        tune(_base(train_store, tmp_path), n_trials, storage=tmp_path / "s.db")


@pytest.mark.parametrize(
    "liveness, match",
    [
        ({"heartbeat_interval": 0}, "heartbeat_interval=0: expected a number of seconds > 0"),
        ({"heartbeat_interval": "60"}, "heartbeat_interval='60'"),
        ({"grace_period": -1.0}, "grace_period=-1.0"),
        ({"grace_period": float("inf")}, "grace_period=inf"),
    ],
)
def test_bad_heartbeat(train_store, tmp_path, no_training, liveness, match):
    with pytest.raises(TuneError, match=match):
        tune(
            _base(train_store, tmp_path),
            2,
            storage=tmp_path / "s.db",
            space=_fixed(lr=(1e-4, 1e-3)),
            **liveness,
        )
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(
    "space, match",
    [
        (lambda: _fixed(lr=1e-3, modes=("full",), heads=("linear",)), "search space is empty"),
        # classification only
        (lambda: _fixed(label_smoothing=(0.0, 0.2)), "search space is empty: .*regression"),
        # not for a probe
        (lambda: _fixed(layer_decay=(0.5, 1.0), modes=("linear_probe",)), "search space is empty"),
        (lambda: _fixed(lr=(1e-2, 1e-4)), "low is above high"),
        (lambda: _fixed(weight_decay=(0.0, 0.1)), "log scale"),
        (lambda: _fixed(modes=()), "no choice left"),
        (lambda: _fixed(modes=("probe", "full")), "distinct choices among"),
        (lambda: _fixed(head_dropout=(0.0, 1.0)), r"head_dropout.*in \[0, 1\)"),
        (lambda: _fixed(modes=("unfreeze", "full")), "unfreeze_fraction is None"),
        (lambda: {"lr": [1e-4, 1e-3], "lrr": 1}, "did you mean 'lr'"),
    ],
)
def test_bad_search_space(train_store, tmp_path, no_training, space, match):
    with pytest.raises(TuneError, match=match):
        tune(_base(train_store, tmp_path), 2, storage=tmp_path / "s.db", space=space())
    assert not (tmp_path / "study").exists() or not list((tmp_path / "study").glob("trial-*"))


def test_search_space_that_contradicts_the_base_config(train_store, tmp_path, no_training):
    base = _base(train_store, tmp_path, accumulate_grad_batches=4)
    contradiction = r"contradicts the base configuration at \{'batch_size': 6\}"
    with pytest.raises(TuneError, match=contradiction):
        tune(base, 2, storage=tmp_path / "s.db", space=_fixed(batch_sizes=(8, 6)))
    with pytest.raises(TuneError, match="kind='finetune'"):
        tune(
            tiny_fit_config(train_store, tmp_path / "p", kind="pretrain"),
            2,
            storage=tmp_path / "s.db",
            space=_fixed(lr=(1e-4, 1e-3)),
        )


@pytest.mark.parametrize(
    "storage, match",
    [
        ("{file}/study.db", "cannot create the folder"),
        ("sqlite:///{file}/study.db", "cannot be opened"),
        ("journal:{file}/study.log", "cannot open the journal file"),
        ("{tmp}/study.txt", "not a recognised storage"),
        ("nosuchdb://host/db", "cannot be opened"),
    ],
)
def test_storage_that_cannot_be_opened(train_store, tmp_path, no_training, storage, match):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(StorageError, match=match):
        tune(
            _base(train_store, tmp_path),
            2,
            space=_fixed(lr=(1e-4, 1e-3)),
            storage=storage.format(file=a_file, tmp=tmp_path),
        )


def test_existing_study_with_another_metric_or_direction(train_store, tmp_path, no_training):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    space = _fixed(lr=(1e-4, 1e-3))
    other = optuna.create_study(storage=storage, study_name="sex", direction="maximize")
    other.set_user_attr("monitor", "val/auroc")
    with pytest.raises(TuneError, match="monitor: the study has 'val/auroc', this run 'val/r2'"):
        tune(_base(train_store, tmp_path), 2, storage=storage, study_name="sex", space=space)
    optuna.create_study(storage=storage, study_name="loss", direction="minimize")
    with pytest.raises(TuneError, match="direction: the study has 'minimize', this run 'maximize'"):
        tune(_base(train_store, tmp_path), 2, storage=storage, study_name="loss", space=space)
    with pytest.raises(TuneError, match="no study 'nope'"):
        attach(storage, "nope")
