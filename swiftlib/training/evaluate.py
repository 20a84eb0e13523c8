"""Evaluate a fine-tuned checkpoint on a split: per-subject predictions and metrics, and a
breakdown by site (or any subject column).

The checkpoint carries everything needed: the task config (model, label, regression
scaler, input contract) and the data config it was trained with (store, split file,
window length). The same split file is reused, so ``split="test"`` scores exactly the
subjects the run held out.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EvalResult", "evaluate_checkpoint", "metrics_by_group"]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict  # "<split>/<name>" -> float
    predictions: object  # pandas DataFrame, one row per subject (+ the store's subject columns)
    config: object  # FinetuneConfig
    data: object  # DataConfig used
    split: str


def evaluate_checkpoint(
    checkpoint,
    split: str = "test",
    store_path: str | None = None,
    splits_dir: str | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    accelerator: str = "cpu",
    precision: str = "32-true",
    progress: bool = False,
) -> EvalResult:
    """Score ``checkpoint`` (a fine-tuning ``.ckpt``) on ``split`` (``"val"`` or ``"test"``).

    ``store_path``/``splits_dir`` override where the data and split files are (e.g. the run
    moved); the store must satisfy the checkpoint's normalisation contract.
    """
    import lightning.pytorch as pl
    import torch

    from swiftlib.data.datamodule import DataConfig, FMRIDataModule
    from swiftlib.tasks.common import (
        CHECKPOINT_KEY,
        CheckpointError,
        check_contract,
        read_checkpoint,
    )
    from swiftlib.tasks.finetune import FinetuneConfig, FinetuneTask

    if split not in ("val", "test"):
        raise ValueError(f"split={split!r}: expected 'val' or 'test'")
    ckpt = read_checkpoint(checkpoint)
    meta = ckpt.get(CHECKPOINT_KEY) or {}
    if meta.get("kind") != "finetune" or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{checkpoint}: a {meta.get('kind', 'non-swiftlib')} checkpoint; expected a "
            "fine-tuning checkpoint (checkpoints/best.ckpt of a fine-tuning run)"
        )
    cfg = FinetuneConfig.from_dict({**ckpt["hyper_parameters"]["config"], "init_from": None})
    data = dict((ckpt.get("datamodule_hyper_parameters") or {}).get("data") or {})
    if not data:
        raise CheckpointError(
            f"{checkpoint}: has no data configuration; pass store_path and splits_dir"
        )
    per_device = DataConfig.from_dict(data).per_device_batch_size
    data.update(
        num_devices=1,
        accumulate_grad_batches=1,
        num_workers=num_workers,
        batch_size=batch_size or per_device,
        eval_batch_size=batch_size or per_device,
    )
    if store_path:
        data["store_path"] = store_path
    if splits_dir:
        data["splits_dir"] = splits_dir
    dcfg = DataConfig.from_dict(data)
    dm = FMRIDataModule(dcfg)
    dm.setup("test")
    check_contract(cfg.contract, dm.contract(), what=f"store {dcfg.store_path}")
    task = FinetuneTask(cfg)
    missing, unexpected = task.load_state_dict(ckpt["state_dict"], strict=False)
    if unexpected or [k for k in missing if not k.endswith("relative_position_index")]:
        raise CheckpointError(
            f"{checkpoint}: weights do not fit {cfg.model!r} (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
    )
    with torch.inference_mode():
        if split == "test":
            out = trainer.test(task, dataloaders=dm.test_dataloader(), verbose=False)
        else:
            out = trainer.validate(task, dataloaders=dm.val_dataloader(), verbose=False)
    metrics = {k: float(v) for k, v in out[0].items() if k.startswith(f"{split}/")}
    preds = task.predictions[split]
    subjects = dm.stores[0].subjects
    extra = [c for c in subjects.columns if c not in preds.columns]
    preds = preds.merge(subjects[extra], left_on="subject_id", right_index=True, how="left")
    log.info(
        "evaluated %s on %s: %s",
        Path(checkpoint).name,
        split,
        {k: round(v, 4) for k, v in metrics.items()},
    )
    return EvalResult(metrics, preds, cfg, dataclasses.replace(dcfg), split)


def metrics_by_group(result: EvalResult, by: str = "site"):
    """Per-subject metrics within each value of column ``by`` (a DataFrame, one row per
    group; AUROC is NaN where a group holds one class only)."""
    import pandas as pd

    from swiftlib.tasks.finetune import subject_metrics

    df = result.predictions
    if by not in df.columns:
        raise KeyError(f"column {by!r} not in the predictions; available: {sorted(df.columns)}")
    rows = [
        {by: key, **subject_metrics(group, result.config)}
        for key, group in df.groupby(by, sort=True)
    ]
    table = pd.DataFrame(rows).set_index(by)
    table["num_subjects"] = table["num_subjects"].astype(int)
    return table
