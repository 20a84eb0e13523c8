"""SimMIM pretraining steps under DeepSpeed ZeRO-2, bf16, on one GPU (used by
``test_deepspeed.py``), through the strategy ``fit`` builds
(``swiftlib.training.deepspeed.build_deepspeed_strategy``: Lightning's ``DeepSpeedStrategy``
with the validated config) for ``strategy="deepspeed_stage_2"``, ``precision="bf16-mixed"`` —
the Perlmutter pretraining setting.

Run as ``python -m tests.gpu.deepspeed_worker RUN_DIR`` (a fresh process: DeepSpeed's
distributed state is global). One epoch of ``STEPS`` steps, then one validation, so the
``best.ckpt`` written by a ``ModelCheckpoint`` like ``fit``'s holds the final weights.
Writes ``RUN_DIR/weights.pt`` (encoder weights before and after, fp32 copies) and prints a
JSON line: losses, checkpoint path, the dtype the parameters had during training, versions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STEPS = 12
BATCH = 2


def main(run_dir: str) -> None:
    import deepspeed
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from swiftlib.data.datamodule import DataConfig
    from swiftlib.tasks import OptimConfig, PretrainConfig, SimMIMTask
    from swiftlib.training.config import TrainerConfig
    from swiftlib.training.deepspeed import build_deepspeed_strategy
    from tests.gpu import common
    from tests.gpu.common import StepRecorder, windows_loader

    run = Path(run_dir)
    trainer_cfg = TrainerConfig(
        strategy="deepspeed_stage_2",
        precision="bf16-mixed",
        accelerator=common.accelerator(),
        devices=1,
        max_epochs=1,
        gradient_clip_val=1.0,
    )
    data_cfg = DataConfig(batch_size=BATCH)
    strategy = build_deepspeed_strategy(trainer_cfg, data_cfg)
    pl.seed_everything(0, verbose=False)
    task = SimMIMTask(
        PretrainConfig(
            model="swift_v2_test",
            optim=OptimConfig(lr=2e-3, warmup_fraction=0.0, total_steps=STEPS),
        )
    )
    initial = {k: v.detach().float().clone() for k, v in task.model.state_dict().items()}
    best = ModelCheckpoint(
        dirpath=str(run / "checkpoints"),
        filename="best",
        monitor="val/recon_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    rec = StepRecorder()
    dtypes: set[str] = set()

    class ParamDtype(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            dtypes.add(str(next(pl_module.model.parameters()).dtype))

    trainer = pl.Trainer(
        accelerator=common.accelerator(),
        devices=1,
        strategy=strategy,
        precision="bf16-mixed",
        max_epochs=1,
        default_root_dir=str(run),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=[best, rec, ParamDtype()],
    )
    trainer.fit(
        task,
        train_dataloaders=windows_loader(batch_size=BATCH, length=STEPS * BATCH),
        val_dataloaders=windows_loader(batch_size=BATCH, num_unique=4),
    )
    final = {k: v.detach().float().cpu().clone() for k, v in task.model.state_dict().items()}
    torch.save({"initial": initial, "final": final}, run / "weights.pt")
    from deepspeed.accelerator import get_accelerator

    print(
        json.dumps(
            {
                "losses": rec.losses,
                "devices": sorted(rec.devices),
                "param_dtypes": sorted(dtypes),
                "best": best.best_model_path,
                "best_score": float(best.best_model_score),
                "global_step": trainer.global_step,
                "zero_stage": trainer.strategy.config["zero_optimization"]["stage"],
                "bf16": trainer.strategy.config["bf16"]["enabled"],
                "deepspeed": deepspeed.__version__,
                "ds_accelerator": get_accelerator()._name,
                "torch": torch.__version__,
                "strategy": type(strategy).__name__,
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    main(sys.argv[1])
