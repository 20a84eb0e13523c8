"""SIGUSR1 → checkpoint at a step boundary → requeue → exact resume (swiftlib/training/requeue.py),
inside a simulated SLURM job (SLURM variables set, ``scontrol`` a recording script). The real
cluster runs the same path end to end in tests/test_slurm.py (``make test-slurm``)."""

from __future__ import annotations

import json
import os
import re
import signal

import lightning.pytorch as pl
import pytest
import torch

from swiftlib.training import TrainingError, fit
from swiftlib.training.requeue import RequeueOnSignal, latest_requeue_checkpoint
from tests.conftest import tiny_fit_config

STEPS_PER_EPOCH = 6  # 8 training subjects x 3 windows / batch 4
COMMON = dict(
    trainer={"max_epochs": 2},
    data={"windows_per_subject": None},
    task={"model_overrides": {"drop_path_rate": 0.2}},
)


@pytest.fixture
def slurm_job(tmp_path, monkeypatch):
    """A fake single-task SLURM batch job; returns the file the fake ``scontrol`` appends its
    arguments to."""
    calls = tmp_path / "scontrol.calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/bash\necho "$@" >> {calls}\nexit ${{SCONTROL_RC:-0}}\n')
    scontrol.chmod(0o755)
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "pretrain",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    previous = signal.getsignal(signal.SIGUSR1)
    yield calls
    signal.signal(signal.SIGUSR1, previous)


@pytest.fixture(scope="module")
def uninterrupted(train_store, tmp_path_factory):
    return fit(
        tiny_fit_config(
            train_store, tmp_path_factory.mktemp("full") / "run", kind="pretrain", **COMMON
        )
    )


class _SignalMidStep(pl.Callback):
    """Send SIGUSR1 (twice: SLURM's own and the runner's forwarded copy) between the backward
    pass and the optimiser step of step ``step``: where Lightning's own handler would save."""

    def __init__(self, step: int, rank: int | None = None):
        self.step, self.rank, self.sent = step, rank, False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if (
            trainer.global_step == self.step
            and not self.sent
            and self.rank in (None, trainer.global_rank)
        ):
            self.sent = True
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)


def _assert_same_run(a, b):
    for k, v in a.metrics.items():
        if k.startswith(("val/", "test/")):  # train/ are epoch means of the last attempt's steps
            assert b.metrics[k] == v, k
    for name in ("best_checkpoint", "last_checkpoint"):
        x = torch.load(getattr(a, name), weights_only=True)["state_dict"]
        y = torch.load(getattr(b, name), weights_only=True)["state_dict"]
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


@pytest.mark.parametrize(
    ("signal_step", "saved_step"),
    [(2, 3), (STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH)],
    ids=["mid-epoch", "last-batch-of-epoch"],
)
def test_signal_mid_step_saves_at_the_boundary_requeues_and_resumes_exactly(
    train_store, tmp_path, slurm_job, uninterrupted, signal_step, saved_step
):
    cfg = tiny_fit_config(train_store, tmp_path / "run", kind="pretrain", **COMMON)
    with pytest.raises(
        TrainingError, match=r"Requeued: SLURM job 4242 was requeued .*hpc_ckpt_1\.ckpt"
    ):
        fit(cfg, callbacks=[_SignalMidStep(signal_step)])
    assert slurm_job.read_text().split("\n")[:-1] == ["requeue 4242"]  # once, for two signals
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["status"] == "failed" and "requeued" in doc["error"]
    hpc = latest_requeue_checkpoint(tmp_path / "run")
    assert hpc == tmp_path / "run" / "hpc_ckpt_1.ckpt"
    # the batch in flight completes first; on the epoch's last batch, after validation and
    # best/last.ckpt
    assert torch.load(hpc, weights_only=True)["global_step"] == saved_step

    # the requeued job: same config, same run dir; Lightning picks hpc_ckpt_1.ckpt
    resumed = fit(cfg)
    assert resumed.status == "ok"
    _assert_same_run(uninterrupted, resumed)


def test_when_scontrol_fails_training_goes_on_and_the_checkpoint_stays(
    train_store, tmp_path, slurm_job, monkeypatch, uninterrupted
):
    monkeypatch.setenv("SCONTROL_RC", "1")
    res = fit(
        tiny_fit_config(train_store, tmp_path / "run", kind="pretrain", **COMMON),
        callbacks=[_SignalMidStep(2)],
    )
    assert res.status == "ok" and slurm_job.read_text() == "requeue 4242\n"
    assert torch.load(tmp_path / "run" / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 3
    _assert_same_run(uninterrupted, res)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_requeue_checkpoint_is_refused_naming_its_path(
    train_store, tmp_path, slurm_job, damage
):
    cfg = tiny_fit_config(train_store, tmp_path / "run", kind="pretrain", **COMMON)
    with pytest.raises(TrainingError):
        fit(cfg, callbacks=[_SignalMidStep(2)])
    hpc = tmp_path / "run" / "hpc_ckpt_1.ckpt"
    data = hpc.read_bytes()
    hpc.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    partial = tmp_path / "run" / ".requeue-partial-2.ckpt"
    partial.write_bytes(b"half a save")  # what a kill during a save would have left
    with pytest.raises(
        TrainingError,
        match=rf"cannot resume from {re.escape(str(hpc))} .*not a readable checkpoint"
        r".*expected a complete checkpoint .*delete it",
    ):
        fit(cfg)
    assert not partial.exists()


def test_the_callback_survives_ddp_spawn_pickling_and_ranks_stop_at_the_same_step(
    train_store, tmp_path, monkeypatch
):
    """Two processes; only rank 1 gets the signal: both save at the same step boundary (the
    decision is reduced over the ranks), rank 0 requeues once."""
    calls = tmp_path / "calls"
    fake = tmp_path / "scontrol"
    fake.write_text(f'#!/bin/bash\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    # SLURM_JOB_ID for the requeue command; an "interactive" job is no SLURM environment for
    # Lightning (ddp_spawn makes the ranks)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")

    cfg = tiny_fit_config(
        train_store,
        tmp_path / "run",
        kind="pretrain",
        trainer={"max_epochs": 1, "strategy": "ddp_spawn", "devices": 2},
    )
    with pytest.raises(Exception, match="requeued"):
        fit(
            cfg,
            callbacks=[
                _SignalMidStep(1, rank=1),
                RequeueOnSignal(requeue_command=(str(fake), "requeue")),
            ],
        )
    assert calls.read_text() == "requeue 77\n"
    assert torch.load(tmp_path / "run" / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 2
