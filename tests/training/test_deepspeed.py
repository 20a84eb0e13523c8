"""DeepSpeed: config validation before launch, and the Lightning DeepSpeed path run for
real on CPU (test-only strategy subclass) whose ZeRO checkpoint converts to a plain
weights-only checkpoint that reproduces the run's test metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from swiftlib.data.datamodule import DataConfig, FMRIDataModule
from swiftlib.tasks.finetune import FinetuneTask
from swiftlib.training.config import TrainerConfig
from swiftlib.training.deepspeed import (
    DeepSpeedConfigError,
    convert_deepspeed_checkpoint,
    deepspeed_config,
    lightning_deepspeed_config,
    validate_deepspeed_config,
)
from tests.conftest import tiny_fit_config

ROOT = Path(__file__).resolve().parents[2]


def _data(**kw):
    return DataConfig(**{"batch_size": 32, "num_devices": 8, "accumulate_grad_batches": 2, **kw})


def test_config_from_the_run_scale():
    t = TrainerConfig(strategy="deepspeed_stage_3_offload", devices=4, num_nodes=2, accumulate_grad_batches=2,
                      precision="bf16-mixed", gradient_clip_val=1.0, deepspeed_config={"zero_optimization": {"stage3_prefetch_bucket_size": 5e7}})
    cfg = deepspeed_config(t, _data())
    assert cfg["train_micro_batch_size_per_gpu"] == 2 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["train_batch_size"] == 32 and cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    z = cfg["zero_optimization"]
    assert z["stage"] == 3 and z["offload_param"]["device"] == "cpu" and z["stage3_prefetch_bucket_size"] == 5e7
    assert cfg["gradient_clipping"] == 1.0
    assert "gradient_accumulation_steps" not in lightning_deepspeed_config(t, _data())  # Lightning sets it


def test_inconsistent_configs_are_refused_before_launch():
    with pytest.raises(DeepSpeedConfigError, match=r"train_batch_size=64 must equal .* 2 × gradient_accumulation_steps 2 × world size 8 = 32"):
        deepspeed_config(TrainerConfig(strategy="deepspeed_stage_2", devices=4, num_nodes=2, accumulate_grad_batches=2,
                                       deepspeed_config={"train_batch_size": 64}), _data())
    with pytest.raises(DeepSpeedConfigError, match="both bf16 and fp16"):
        validate_deepspeed_config({"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}, "fp16": {"enabled": True}}, 1)
    with pytest.raises(DeepSpeedConfigError, match="train_micro_batch_size_per_gpu=0"):
        validate_deepspeed_config({"train_micro_batch_size_per_gpu": 0}, 1)
    with pytest.raises(DeepSpeedConfigError, match="stage=4"):
        validate_deepspeed_config({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 4}}, 1)
    with pytest.raises(DeepSpeedConfigError, match="not a DeepSpeed strategy"):
        deepspeed_config(TrainerConfig(strategy="ddp"), _data(num_devices=1, accumulate_grad_batches=1))
    with pytest.raises(FileNotFoundError, match="DeepSpeed checkpoint directory"):
        convert_deepspeed_checkpoint("/nonexistent", "/tmp/x.ckpt")


def test_zero2_run_on_cpu_and_checkpoint_conversion(train_store, tmp_path):
    cfg = tiny_fit_config(train_store, tmp_path / "ds", trainer={"strategy": "deepspeed_stage_2", "max_epochs": 1})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    import socket

    with socket.socket() as sock:  # a free port: other distributed tests may run at the same time
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_PORT": str(port)}
    out = subprocess.run([sys.executable, "-m", "tests.training.cpu_deepspeed", str(tmp_path / "cfg.json")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    best = Path(run["best"])
    assert best.is_dir() and (best / "checkpoint").is_dir()  # a sharded ZeRO checkpoint
    plain = convert_deepspeed_checkpoint(best, tmp_path / "best_fp32.ckpt")
    ckpt = torch.load(plain, weights_only=True)
    assert ckpt["swiftlib"]["kind"] == "finetune" and ckpt["swiftlib"]["contract"]["grid"] == [20, 24, 28]
    task = FinetuneTask.load_from_checkpoint(plain, weights_only=True)
    assert set(ckpt["state_dict"]) == set(task.state_dict())
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    got = trainer.test(task, datamodule=FMRIDataModule(DataConfig.from_dict({**cfg["data"], "label": "sex"})),
                       verbose=False)[0]
    assert got["test/loss"] == pytest.approx(run["metrics"]["test/loss"], abs=1e-5)
    # the converted file initialises a new fine-tuning run (weights only)
    import swiftlib
    from swiftlib.tasks.common import load_encoder_weights

    enc = swiftlib.create_model("swift_v2_test", num_classes=0)
    report = load_encoder_weights(enc, plain, "swift_v2_test", {}, train_store.contract())
    assert report["missing"] == [] and len(report["loaded"]) == len(enc.state_dict())
