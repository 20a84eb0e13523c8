"""``swiftlib.tasks`` on a GPU: SimMIM pretraining and fine-tuning steps through Lightning in
``bf16-mixed`` precision (the Perlmutter setting), on in-memory windows with a planted signal."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from swiftlib.tasks import FinetuneConfig, FinetuneTask, OptimConfig, PretrainConfig, SimMIMTask
from tests.gpu import common
from tests.gpu.common import GPU_ONLY, StepRecorder, changed, snapshot, tiny_trainer, windows_loader

pytestmark = GPU_ONLY

STEPS = 40
OPTIM = {"lr": 2e-3, "warmup_fraction": 0.0, "min_lr_ratio": 1.0}


def _check_training(rec: StepRecorder, before: dict, after: dict, what: str) -> None:
    assert len(rec.losses) == STEPS, f"{what}: {len(rec.losses)} steps recorded, expected {STEPS}"
    assert all(math.isfinite(v) for v in rec.losses), f"{what}: non-finite loss in {rec.losses}"
    first, last = statistics.mean(rec.losses[:8]), statistics.mean(rec.losses[-8:])
    assert last < 0.9 * first, (
        f"{what}: loss did not decrease (first 8 steps {first:.4f}, last 8 {last:.4f})"
    )
    assert rec.devices == {torch.device(common.DEVICE).type}, f"{what}: ran on {rec.devices}"
    assert rec.linear_dtypes == {torch.bfloat16}, (
        f"{what}: Linear outputs {rec.linear_dtypes} under bf16-mixed"
    )
    moved = changed(before, after)
    assert any(k.startswith("model.") for k in moved), f"{what}: no encoder parameter changed"


@pytest.mark.parametrize("model", ["swift_v2_test", "swift_v2_factorized_test"])
def test_simmim_bf16_mixed_steps(model, tmp_path):
    torch.manual_seed(0)
    task = SimMIMTask(
        PretrainConfig(model=model, mask_ratio=0.5, optim=OptimConfig(**OPTIM, total_steps=STEPS))
    )
    before = snapshot(task)
    rec = StepRecorder()
    tiny_trainer(tmp_path, STEPS, [rec]).fit(task, train_dataloaders=windows_loader(batch_size=4))
    after = snapshot(task)
    _check_training(rec, before, after, f"SimMIM {model}")
    assert all(p.dtype == torch.float32 for p in task.parameters()), "bf16-mixed keeps fp32 weights"
    assert "model.mask_token" in changed(before, after)


def test_finetune_bf16_mixed_steps_and_validation(tmp_path):
    torch.manual_seed(0)
    task = FinetuneTask(
        FinetuneConfig(
            model="swift_v2_test",
            task="classification",
            num_classes=2,
            optim=OptimConfig(**OPTIM, total_steps=STEPS),
        )
    )
    before = snapshot(task)
    rec = StepRecorder()
    trainer = tiny_trainer(tmp_path, STEPS, [rec], limit_val_batches=1.0)
    trainer.fit(task, train_dataloaders=windows_loader(batch_size=4))
    after = snapshot(task)
    _check_training(rec, before, after, "fine-tune swift_v2_test")
    assert any(k.startswith("head.") for k in changed(before, after))
    # subject-level evaluation (gathered window scores → per-subject metrics) after GPU steps
    (metrics,) = trainer.validate(task, dataloaders=windows_loader(batch_size=4), verbose=False)
    assert math.isfinite(metrics["val/loss"]) and metrics["val/num_subjects"] == 8
    assert 0.0 <= metrics["val/auroc"] <= 1.0
