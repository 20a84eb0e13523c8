"""fit(): results.json, pretrain → fine-tune, NaN stop, kill-and-resume, contract refusal."""

import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from swiftlib.tasks.common import ContractError
from swiftlib.training import FitConfig, TrainingError, fit
from tests.conftest import kill_and_resume, tiny_fit_config


def test_finetune_writes_results_checkpoints_and_predictions(train_store, tmp_path):
    res = fit(tiny_fit_config(train_store, tmp_path / "ft", trainer={"max_epochs": 2}))
    assert res.status == "ok" and res.monitor == "val/auroc"
    doc = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert doc["kind"] == "finetune" and doc["status"] == "ok" and doc["error"] is None
    for key in (
        "val/auroc",
        "val/balanced_acc",
        "test/auroc",
        "test/acc",
        "test/loss",
        "train/loss_epoch",
    ):
        assert key in doc["metrics"], key
    # 12 subjects x 0.15, every test subject evaluated
    assert doc["metrics"]["test/num_subjects"] == 2.0
    # stable names notebooks chain on
    assert doc["artifacts"]["best_checkpoint"] == "checkpoints/best.ckpt"
    assert (tmp_path / "ft" / doc["artifacts"]["last_checkpoint"]).exists()
    assert doc["parameters"]["task"]["contract"]["grid"] == [20, 24, 28]
    assert doc["versions"]["torch"].startswith("2.13")
    preds = (tmp_path / "ft" / "predictions_test.csv").read_text().splitlines()
    assert preds[0].startswith("subject_id") and len(preds) == 3
    ckpt = torch.load(res.best_checkpoint, weights_only=True)
    assert (
        ckpt["swiftlib"]["kind"] == "finetune" and ckpt["swiftlib"]["contract"]["voxel_size"] == 8.0
    )
    assert list((tmp_path / "ft" / "tensorboard").glob("events.out.tfevents.*"))


def test_pretrain_then_finetune_from_it(train_store, tmp_path):
    pre = fit(
        tiny_fit_config(train_store, tmp_path / "pre", kind="pretrain", trainer={"max_epochs": 2})
    )
    m = pre.metrics
    assert (
        pre.monitor == "val/recon_loss"
        and 0 < m["val/recon_loss"]
        and 0 < m["val/mean_predictor_loss"]
    )
    assert m["val/recon_ratio"] == pytest.approx(
        m["val/recon_loss"] / m["val/mean_predictor_loss"], rel=1e-3
    )
    assert "test/recon_loss" in m
    examples = torch.load(tmp_path / "pre" / "reconstructions.pt", weights_only=True)
    assert examples[0]["input"].shape == examples[0]["reconstruction"].shape == (20, 24, 28, 8)
    ft = fit(
        tiny_fit_config(
            train_store,
            tmp_path / "ft",
            task={
                "label": "age",
                "task": "regression",
                "init_from": pre.best_checkpoint,
                "mode": "unfreeze",
                "unfreeze_fraction": 0.5,
            },
        )
    )
    assert ft.status == "ok" and ft.monitor == "val/r2"
    for key in ("test/mse", "test/mae", "test/r2", "test/pearson"):
        assert key in ft.metrics
    hp = torch.load(ft.best_checkpoint, weights_only=True)["hyper_parameters"]["config"]
    ages = train_store.subjects["age"]
    assert 45 < hp["target_mean"] < 80 and 0 < hp["target_std"] < ages.std() * 2


def test_label_task_mismatch_and_unknown_label_fail_before_training(train_store, tmp_path):
    with pytest.raises(
        ValueError, match="task='regression' but label 'sex' is declared 'classification'"
    ):
        fit(tiny_fit_config(train_store, tmp_path / "a", task={"task": "regression"}))
    with pytest.raises(KeyError, match="valid labels"):
        fit(tiny_fit_config(train_store, tmp_path / "b", task={"label": "iq"}))
    with pytest.raises(ValueError, match="unknown run setting"):
        FitConfig.from_dict({"kind": "finetune", "trainr": {}})


def test_task_auto_takes_the_label_type_from_the_store(train_store, tmp_path):
    ft = fit(
        tiny_fit_config(
            train_store,
            tmp_path / "auto",
            task={"task": "auto", "label": "age"},
            trainer={"max_steps": 2},
        )
    )
    hp = torch.load(ft.last_checkpoint, weights_only=True)["hyper_parameters"]["config"]
    assert ft.monitor == "val/r2" and hp["task"] == "regression" and hp["target_std"] > 0


def test_contract_refused_when_finetuning_on_other_data(train_store, tmp_path, synth_store):
    pre = fit(
        tiny_fit_config(train_store, tmp_path / "pre", kind="pretrain", trainer={"max_steps": 2})
    )
    # synth_store is on a (20, 24, 22) grid: the checkpoint's contract says (20, 24, 28)
    cfg = tiny_fit_config(synth_store, tmp_path / "ft", task={"init_from": pre.last_checkpoint})
    with pytest.raises(ContractError, match=r"grid: checkpoint expects \[20, 24, 28\]"):
        fit(cfg)


class _PoisonAfter(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    train_store, tmp_path
):
    cfg = tiny_fit_config(
        train_store, tmp_path / "nan", trainer={"max_epochs": 3, "checkpoint_every_n_steps": 2}
    )
    with pytest.raises(TrainingError, match="non-finite training loss"):
        fit(cfg, callbacks=[_PoisonAfter(3)])  # after the step-2 checkpoint, before step 4
    doc = json.loads((tmp_path / "nan" / "results.json").read_text())
    assert doc["status"] == "failed" and "non-finite training loss" in doc["error"]
    last = torch.load(tmp_path / "nan" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_killed_mid_epoch_and_resumed_matches_an_uninterrupted_run(train_store, tmp_path):
    # 6 steps per epoch: killed in the middle of epoch 2; weights checked bit-equal inside
    full, resumed = kill_and_resume(
        train_store,
        tmp_path,
        trainer={"max_epochs": 2, "checkpoint_every_n_steps": 1},
        task={"model_overrides": {"drop_path_rate": 0.2}},
    )
    for k in ("val/auroc", "val/loss", "test/loss", "test/auroc"):
        assert resumed.metrics[k] == pytest.approx(full.metrics[k], abs=1e-6, nan_ok=True), k


def test_resume_from_missing_file_is_refused(train_store, tmp_path):
    with pytest.raises(FileNotFoundError, match="resume_from="):
        fit(tiny_fit_config(train_store, tmp_path / "r", resume_from=str(tmp_path / "nope.ckpt")))


def test_resume_from_a_checkpoint_of_another_kind_is_refused(train_store, tmp_path):
    pre = fit(
        tiny_fit_config(train_store, tmp_path / "pre", kind="pretrain", trainer={"max_steps": 1})
    )
    from swiftlib.tasks.common import CheckpointError

    with pytest.raises(
        CheckpointError, match="is a pretrain checkpoint .* this run is 'finetune'.*init_from"
    ):
        fit(tiny_fit_config(train_store, tmp_path / "ft", resume_from=pre.last_checkpoint))


def test_bf16_mixed_precision_runs_on_cpu(train_store, tmp_path):
    res = fit(
        tiny_fit_config(
            train_store, tmp_path / "bf16", trainer={"precision": "bf16-mixed", "max_steps": 3}
        )
    )
    assert res.status == "ok" and np.isfinite(res.metrics["test/loss"])


def test_slurm_batch_jobs_get_auto_requeue(monkeypatch):
    import signal

    from swiftlib.training.fit import _slurm_plugins

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert _slurm_plugins() == []
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NAME", "swiftlib-pretrain")
    (env,) = _slurm_plugins()
    # Lightning's own SIGUSR1 handler is off: swiftlib's RequeueOnSignal saves at a step boundary
    # (build_trainer adds it; tests/training/test_requeue.py)
    assert not env.auto_requeue and env.requeue_signal == signal.SIGUSR1


def test_fit_sets_the_schedule_length_and_writes_the_evaluated_outputs(train_store, tmp_path):
    """The tasks do no file I/O and get nothing assigned from outside: the LR schedule's
    length arrives in the config, and fit writes reconstructions/predictions from the
    evaluated checkpoint — SimMIM examples from *validation* windows (they used to be
    overwritten by the test pass)."""
    import yaml

    from swiftlib.data.datamodule import DataConfig, FMRIDataModule
    from swiftlib.tasks.pretrain import PretrainConfig, SimMIMTask

    cfg = tiny_fit_config(train_store, tmp_path / "pre", kind="pretrain", trainer={"max_epochs": 2})
    fit(cfg)
    resolved = yaml.safe_load((tmp_path / "pre" / "config.yaml").read_text())
    # 8 subjects × 3 windows / batch 4 × 2 epochs
    assert resolved["task"]["optim"]["total_steps"] == 12
    dm = FMRIDataModule(DataConfig.from_dict(cfg["data"]))
    dm.setup("fit")
    examples = torch.load(tmp_path / "pre" / "reconstructions.pt", weights_only=True)
    assert {e["subject_id"] for e in examples} <= set(dm.val_dataset.subject_ids)
    assert not hasattr(SimMIMTask(PretrainConfig()), "output_dir")
    fixed = fit(
        {
            **tiny_fit_config(train_store, tmp_path / "ft", trainer={"max_epochs": 1}),
            "task": {"model": "swift_v2_test", "label": "sex", "optim": {"total_steps": 50}},
        }
    )
    hp = torch.load(fixed.best_checkpoint, weights_only=True)["hyper_parameters"]["config"]
    assert hp["optim"]["total_steps"] == 50  # a value the user set is kept
    rows = (tmp_path / "ft" / "predictions_test.csv").read_text().splitlines()
    assert len(rows) == 1 + fixed.metrics["test/num_subjects"]
