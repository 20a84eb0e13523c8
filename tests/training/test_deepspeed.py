"""DeepSpeed: config validation before launch; the Lightning DeepSpeed path run for real on
CPU (test-only strategy subclass) for ZeRO 1, 2, 3 and 3-offload, each pretraining →
fine-tuning ``init_from`` the ZeRO folder → evaluate / embed / attribute / info on the
fine-tuned ZeRO folder through the one checkpoint loader; exact resume; bad checkpoints."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import swiftlib
from swiftlib.data.datamodule import DataConfig
from swiftlib.tasks.common import CheckpointError, load_encoder_weights, read_checkpoint
from swiftlib.tasks.finetune import FinetuneTask
from swiftlib.training.config import TrainerConfig
from swiftlib.training.deepspeed import (
    DeepSpeedConfigError,
    consolidated_checkpoint,
    convert_deepspeed_checkpoint,
    deepspeed_config,
    inspect_deepspeed_checkpoint,
    lightning_deepspeed_config,
    validate_deepspeed_config,
)
from tests.conftest import tiny_fit_config

ROOT = Path(__file__).resolve().parents[2]


def _data(**kw):
    return DataConfig(**{"batch_size": 32, "num_devices": 8, "accumulate_grad_batches": 2, **kw})


def test_config_from_the_run_scale():
    t = TrainerConfig(
        strategy="deepspeed_stage_3_offload",
        devices=4,
        num_nodes=2,
        accumulate_grad_batches=2,
        precision="bf16-mixed",
        gradient_clip_val=1.0,
        deepspeed_config={"zero_optimization": {"stage3_prefetch_bucket_size": 5e7}},
    )
    cfg = deepspeed_config(t, _data())
    assert cfg["train_micro_batch_size_per_gpu"] == 2 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["train_batch_size"] == 32 and cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    z = cfg["zero_optimization"]
    assert (
        z["stage"] == 3
        and z["offload_param"]["device"] == "cpu"
        and z["stage3_prefetch_bucket_size"] == 5e7
    )
    assert cfg["gradient_clipping"] == 1.0
    # Lightning sets it
    assert "gradient_accumulation_steps" not in lightning_deepspeed_config(t, _data())


def test_inconsistent_configs_are_refused_before_launch():
    with pytest.raises(
        DeepSpeedConfigError,
        match=(
            r"train_batch_size=64 must equal .* 2 × gradient_accumulation_steps 2 × "
            r"world size 8 = 32"
        ),
    ):
        deepspeed_config(
            TrainerConfig(
                strategy="deepspeed_stage_2",
                devices=4,
                num_nodes=2,
                accumulate_grad_batches=2,
                deepspeed_config={"train_batch_size": 64},
            ),
            _data(),
        )
    with pytest.raises(DeepSpeedConfigError, match="both bf16 and fp16"):
        validate_deepspeed_config(
            {
                "train_micro_batch_size_per_gpu": 1,
                "bf16": {"enabled": True},
                "fp16": {"enabled": True},
            },
            1,
        )
    with pytest.raises(DeepSpeedConfigError, match="train_micro_batch_size_per_gpu=0"):
        validate_deepspeed_config({"train_micro_batch_size_per_gpu": 0}, 1)
    with pytest.raises(DeepSpeedConfigError, match="stage=4"):
        validate_deepspeed_config(
            {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 4}}, 1
        )
    with pytest.raises(DeepSpeedConfigError, match="not a DeepSpeed strategy"):
        deepspeed_config(
            TrainerConfig(strategy="ddp"), _data(num_devices=1, accumulate_grad_batches=1)
        )
    with pytest.raises(FileNotFoundError, match="DeepSpeed checkpoint directory"):
        convert_deepspeed_checkpoint("/nonexistent", "/tmp/x.ckpt")


def run_cpu_deepspeed(tmp_path: Path, *configs: dict) -> list[dict]:
    """Run ``configs`` one after another in one fresh process with the CPU DeepSpeed strategy;
    return each run's JSON line."""
    import socket

    paths = []
    for i, cfg in enumerate(configs):
        paths.append(tmp_path / f"cfg{i}.json")
        paths[-1].write_text(json.dumps(cfg))
    with socket.socket() as sock:  # a free port: other distributed tests may run at the same time
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.training.cpu_deepspeed", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(configs), out.stdout[-2000:]
    return lines


def _state(path) -> dict:
    return read_checkpoint(path)["state_dict"]


@pytest.mark.parametrize(
    "strategy",
    ["deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_3_offload"],
)
def test_deepspeed_pretrain_to_finetune_to_every_downstream_stage(strategy, train_store, tmp_path):
    from swiftlib.info import describe
    from swiftlib.interpret import attribute, extract_embeddings
    from swiftlib.training.evaluate import evaluate_checkpoint

    pre_best = tmp_path / "pre" / "checkpoints" / "best.ckpt"
    trainer = {"strategy": strategy, "max_epochs": 1}
    pre_out, ft_out = run_cpu_deepspeed(
        tmp_path,
        tiny_fit_config(train_store, tmp_path / "pre", kind="pretrain", trainer=trainer),
        # the perlmutter presets' chain: init_from names the pretraining run's best.ckpt folder
        tiny_fit_config(
            train_store, tmp_path / "ft", trainer=trainer, task={"init_from": str(pre_best)}
        ),
    )
    assert pre_out["status"] == ft_out["status"] == "ok"
    ft_best = Path(ft_out["best"])
    for run, best in (("pre", pre_best), ("ft", ft_best)):
        assert best.is_dir() and any(best.glob("*/*optim_states.pt"))  # a sharded ZeRO folder
        doc = json.loads((tmp_path / run / "results.json").read_text())
        assert (
            doc["status"] == "ok" and doc["artifacts"]["best_checkpoint"] == "checkpoints/best.ckpt"
        )
        # written by fit, rank 0
        assert doc["artifacts"]["best_checkpoint_fp32"] == "checkpoints/best.fp32.ckpt"
        assert (tmp_path / run / "checkpoints" / "best.fp32.ckpt").is_file()
    assert inspect_deepspeed_checkpoint(ft_best)["zero_stage"] == int(strategy.split("_")[2])

    # init_from the ZeRO folder: converted on demand when its fp32 copy is gone, equal to what
    # fit wrote
    written = _state(tmp_path / "pre" / "checkpoints" / "best.fp32.ckpt")
    (tmp_path / "pre" / "checkpoints" / "best.fp32.ckpt").unlink()
    enc = swiftlib.create_model("swift_v2_test", num_classes=0)
    report = load_encoder_weights(enc, pre_best, "swift_v2_test", {}, train_store.contract())
    assert (
        report["kind"] == "pretrain"
        and report["missing"] == []
        and len(report["loaded"]) == len(enc.state_dict())
    )
    assert all(torch.equal(v, written["model.encoder." + k]) for k, v in enc.state_dict().items())

    # evaluate / embed / attribute / info on the fine-tuned ZeRO folder (its fp32 copies removed
    # first)
    for f in (tmp_path / "ft" / "checkpoints").glob("*.fp32.ckpt"):
        f.unlink()
    ev = evaluate_checkpoint(ft_best, split="test")
    # fit's own test score
    assert ev.metrics["test/loss"] == pytest.approx(ft_out["metrics"]["test/loss"], abs=1e-5)
    fp32 = tmp_path / "ft" / "checkpoints" / "best.fp32.ckpt"
    stamp = fp32.stat().st_mtime_ns
    task = FinetuneTask.load_from_checkpoint(fp32, weights_only=True)
    assert set(_state(fp32)) == set(task.state_dict())
    emb = extract_embeddings(ft_best, train_store, split="test", device="cpu", progress=False)
    assert len(emb) == len(ev.predictions) and np.isfinite(emb.filter(like="emb").to_numpy()).all()
    subject = str(ev.predictions["subject_id"].iloc[0])
    attr = attribute(
        ft_best, train_store, subjects=[subject], method="saliency", device="cpu", progress=False
    )
    assert attr.map("group").shape == (20, 24, 28) and np.abs(attr.map("group")).sum() > 0
    assert fp32.stat().st_mtime_ns == stamp  # converted once, then reused
    info = describe(ft_best, full=True)
    assert info["kind"] == "deepspeed_checkpoint" and info["consolidated"] == str(fp32.resolve())
    assert info["swiftlib"]["kind"] == "finetune" and info["num_parameters"] > 0


@pytest.mark.parametrize("strategy", ["deepspeed_stage_2", "deepspeed_stage_3"])
def test_deepspeed_run_killed_mid_epoch_resumes_exactly(strategy, train_store, tmp_path):
    common = dict(
        kind="pretrain",
        trainer={"strategy": strategy, "max_epochs": 2, "checkpoint_every_n_steps": 1},
    )
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    full, cut, resumed = run_cpu_deepspeed(
        tmp_path,
        tiny_fit_config(train_store, tmp_path / "full", **common),
        # 6 steps/epoch: mid epoch 2
        {**tiny_fit_config(train_store, tmp_path / "cut", **common), "_kill_at": 8},
        tiny_fit_config(train_store, tmp_path / "cut", resume_from=str(last), **common),
    )
    assert cut["status"] == "failed" and "killed at step 8" in cut["error"]
    assert full["status"] == resumed["status"] == "ok"
    for k in ("val/recon_loss", "test/recon_loss"):
        assert resumed["metrics"][k] == pytest.approx(full["metrics"][k], abs=1e-6), k
    a, b = _state(Path(full["last"])), _state(Path(resumed["last"]))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def zero2_pretrain(train_store, tmp_path_factory):
    """One ZeRO-2 pretraining run's ``last.ckpt`` folder (shared; tests copy it before changing
    it)."""
    tmp = tmp_path_factory.mktemp("zero2")
    (out,) = run_cpu_deepspeed(
        tmp,
        tiny_fit_config(
            train_store,
            tmp / "pre",
            kind="pretrain",
            trainer={"strategy": "deepspeed_stage_2", "max_steps": 2},
        ),
    )
    return Path(out["last"])


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_or_corrupt_shards_are_named(zero2_pretrain, tmp_path):
    ckpt = _copy(zero2_pretrain, tmp_path / "a.ckpt")
    next(ckpt.glob("*/*optim_states.pt")).unlink()
    with pytest.raises(
        CheckpointError, match=r"written by 1 data-parallel ranks \(ZeRO-2\) but shards are missing"
    ):
        read_checkpoint(ckpt)
    ckpt = _copy(zero2_pretrain, tmp_path / "b.ckpt")
    model = next(ckpt.glob("*/mp_rank_00_model_states.pt"))
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a save cut short
    with pytest.raises(
        CheckpointError, match="mp_rank_00_model_states.pt: unreadable DeepSpeed shard"
    ):
        read_checkpoint(ckpt)
    ckpt = _copy(zero2_pretrain, tmp_path / "c.ckpt")
    (ckpt / "latest").write_text("global_step99")
    with pytest.raises(CheckpointError, match="names tag 'global_step99' but .* is missing"):
        read_checkpoint(ckpt)
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="is a folder but not a DeepSpeed checkpoint"):
        read_checkpoint(tmp_path / "plain")
    assert not list(tmp_path.glob("*.fp32.ckpt"))  # nothing half-written


def test_other_preset_and_unwritable_target_and_stale_copy(zero2_pretrain, tmp_path, monkeypatch):
    ckpt = _copy(zero2_pretrain, tmp_path / "best.ckpt")
    enc = swiftlib.create_model("swift_v2_test", num_classes=0, embed_dim=24)
    with pytest.raises(
        CheckpointError,
        match=r"made for model 'swift_v2_test' with options \{\}.*use the same preset",
    ):
        load_encoder_weights(enc, ckpt, "swift_v2_test", {"embed_dim": 24})
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SWIFTLIB_CHECKPOINT_CACHE", str(blocker / "cache"))
    with pytest.raises(
        CheckpointError,
        match=(
            r"best.ckpt is a DeepSpeed checkpoint; .* is not writable .*SWIFTLIB_CHECKPOINT_CACHE"
        ),
    ):
        read_checkpoint(ckpt)
    monkeypatch.setenv("SWIFTLIB_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    first = consolidated_checkpoint(ckpt)
    assert first.parent == tmp_path / "cache" and first.name.endswith("-best.fp32.ckpt")
    stamp = first.stat().st_mtime_ns
    assert consolidated_checkpoint(ckpt).stat().st_mtime_ns == stamp  # reused
    model = next(ckpt.glob("*/mp_rank_00_model_states.pt"))
    # the folder was rewritten (a later last.ckpt)
    os.utime(model, ns=(stamp + 10**9, stamp + 10**9))
    assert consolidated_checkpoint(ckpt).stat().st_mtime_ns != stamp  # converted again


def test_failed_conversion_leaves_nothing_behind(zero2_pretrain, tmp_path, monkeypatch):
    ckpt = _copy(zero2_pretrain, tmp_path / "best.ckpt")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        CheckpointError, match="cannot write the consolidated checkpoint .*No space left"
    ):
        read_checkpoint(ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]


def test_resume_refuses_another_scale_or_strategy(zero2_pretrain, train_store, tmp_path):
    from swiftlib.training import fit

    with pytest.raises(
        CheckpointError,
        match=r"holds ZeRO-2 shards of 1 ranks; this run has 2 \(devices 2 × num_nodes 1\)",
    ):
        fit(
            tiny_fit_config(
                train_store,
                tmp_path / "r",
                kind="pretrain",
                resume_from=str(zero2_pretrain),
                trainer={"strategy": "deepspeed_stage_2", "devices": 2},
            )
        )
    with pytest.raises(
        CheckpointError,
        match="is a DeepSpeed ZeRO-2 checkpoint; resume it with a DeepSpeed strategy",
    ):
        fit(
            tiny_fit_config(
                train_store, tmp_path / "r", kind="pretrain", resume_from=str(zero2_pretrain)
            )
        )


def test_requeue_checkpoint_folder_is_checked_shard_by_shard(zero2_pretrain, tmp_path):
    from swiftlib.training.requeue import check_requeue_checkpoint

    good = _copy(zero2_pretrain, tmp_path / "hpc_ckpt_1.ckpt")
    assert check_requeue_checkpoint(good) == good
    bad = _copy(zero2_pretrain, tmp_path / "hpc_ckpt_2.ckpt")
    next(bad.glob("*/*optim_states.pt")).unlink()  # a rank's save never landed
    with pytest.raises(
        CheckpointError,
        match=r"requeued job: cannot resume from .*hpc_ckpt_2.ckpt: .*shards are missing",
    ):
        check_requeue_checkpoint(bad)
