"""``FinetuneTask``: downstream classification / regression on a Swin4D encoder.

Modes: ``linear_probe`` (encoder frozen, kept in eval mode), ``unfreeze`` (the top
``unfreeze_fraction`` of the encoder's block groups, or the last ``unfreeze_last_k``),
``full``. The encoder starts from scratch, a SimMIM or fine-tuned swiftlib checkpoint, or a
public SwiFT v1 checkpoint (``init_from``, weights only).

Evaluation is **per subject**: the predictions of all windows of a subject are averaged
(class probabilities, or standardised regression outputs), after gathering every rank's
predictions and de-duplicating windows that a distributed sampler padded in twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics.functional as tmf
from torch import nn

from swiftlib.tasks.common import TEMPLATE_POLICIES, CheckpointMetaMixin, build_encoder
from swiftlib.tasks.optim import OptimConfig, build_optimizer, param_groups
from swiftlib.tasks.optim import total_steps as _total_steps
from swiftlib.utils.config import config_from_dict, config_to_dict

__all__ = ["FinetuneConfig", "FinetuneTask", "MONITOR", "subject_predictions", "subject_metrics"]

log = logging.getLogger(__name__)

# The one monitored metric per task type: checkpointing, early stopping, pruning, results.json.
MONITOR = {"classification": ("val/auroc", "max"), "regression": ("val/r2", "max")}
#: ``task="auto"``: the task type the store declares for the label (resolved by ``for_label``).
AUTO_TASK = "auto"


@dataclass
class FinetuneConfig:
    """Downstream fine-tuning. ``target_mean``/``target_std`` (regression scaler) are fitted
    on the training subjects by :func:`swiftlib.training.fit` and stored in the checkpoint.

    ``task="auto"`` takes the task type (and the number of classes) from the store's label
    declaration (:meth:`for_label`, which the run calls once the data is open); a task named
    explicitly must match it. ``template_mismatch`` decides what happens when the data's MNI
    template differs from the one an ``init_from`` (or evaluated) checkpoint was trained on:
    ``"warn"``, ``"error"`` or ``"ignore"`` (:func:`swiftlib.tasks.common.check_contract`).
    """

    model: str = "swift_v2_test"  # encoder preset (swiftlib.list_models())
    model_overrides: dict = field(default_factory=dict)
    label: str = "sex"  # label column of the store
    task: Literal["auto", "classification", "regression"] = "classification"
    num_classes: int = 2  # classification only
    mode: Literal["full", "linear_probe", "unfreeze"] = "full"
    # mode="unfreeze": top fraction of block groups (0.2 = v2 runs)
    unfreeze_fraction: float | None = None
    unfreeze_last_k: int | None = None  # mode="unfreeze": or the last k block groups
    head: Literal["linear", "mlp"] = "linear"
    head_dropout: float = 0.0
    label_smoothing: float = 0.0  # classification only
    init_from: str | None = None  # encoder weights: SimMIM / fine-tuned / SwiFT v1 checkpoint
    optim: OptimConfig = field(default_factory=OptimConfig)
    target_mean: float = 0.0
    target_std: float = 1.0
    contract: dict | None = None  # input contract of the training data
    template_mismatch: Literal["warn", "error", "ignore"] = "warn"  # data vs checkpoint template
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = OptimConfig.from_dict(self.optim)
        if self.task == "classification" and self.num_classes < 2:
            raise ValueError(
                f"FinetuneConfig.num_classes={self.num_classes}: classification needs ≥ 2"
            )
        if self.mode == "unfreeze":
            if (self.unfreeze_fraction is None) == (self.unfreeze_last_k is None):
                raise ValueError(
                    "mode='unfreeze' needs exactly one of unfreeze_fraction (e.g. 0.2) or "
                    "unfreeze_last_k"
                )
            if self.unfreeze_fraction is not None and not 0 < self.unfreeze_fraction <= 1:
                raise ValueError(f"unfreeze_fraction={self.unfreeze_fraction}: expected in (0, 1]")
            if self.unfreeze_last_k is not None and self.unfreeze_last_k < 1:
                raise ValueError(f"unfreeze_last_k={self.unfreeze_last_k}: expected ≥ 1")
        elif self.unfreeze_fraction is not None or self.unfreeze_last_k is not None:
            raise ValueError(
                "unfreeze_fraction/unfreeze_last_k only apply to mode='unfreeze', not "
                f"mode={self.mode!r}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing={self.label_smoothing}: expected in [0, 1)")
        if not self.target_std > 0:
            raise ValueError(f"target_std={self.target_std}: expected > 0")
        if self.template_mismatch not in TEMPLATE_POLICIES:  # when built without from_dict
            raise ValueError(
                f"template_mismatch={self.template_mismatch!r}: expected one of "
                f"{list(TEMPLATE_POLICIES)}"
            )

    @property
    def num_outputs(self) -> int:
        if self.task == AUTO_TASK:
            raise ValueError(
                "task='auto' is not resolved yet: call FinetuneConfig.for_label(...) with the "
                "store's label declaration (fit() does) before building the model"
            )
        return self.num_classes if self.task == "classification" else 1

    def for_label(
        self, label_task: str, num_classes: int | None = None, where: str = "the store"
    ) -> FinetuneConfig:
        """This config with the task type the data declares for ``label``: ``task="auto"``
        takes it (and the number of classes), an explicit task must equal it. Messages name
        the notebook parameters (``task``, ``label``)."""
        import dataclasses

        if label_task not in MONITOR:
            raise ValueError(
                f"label {self.label!r} is declared with task type {label_task!r} in {where}; "
                f"expected one of {sorted(MONITOR)}"
            )
        if self.task not in (AUTO_TASK, label_task):
            raise ValueError(
                f"task={self.task!r} but label {self.label!r} is declared {label_task!r} in "
                f"{where}; set task={label_task!r} (or task='auto' to take it from the store)"
            )
        updates: dict = {"task": label_task}
        if self.task == AUTO_TASK:
            log.info("task: %s (label %r, as declared in %s)", label_task, self.label, where)
        if label_task == "classification" and num_classes and num_classes != self.num_classes:
            log.info(
                "num_classes %d -> %d (from the store's label declaration)",
                self.num_classes,
                num_classes,
            )
            updates["num_classes"] = int(num_classes)
        return dataclasses.replace(self, **updates)

    @classmethod
    def from_dict(cls, d) -> FinetuneConfig:
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return config_to_dict(self)


def _build_head(in_features: int, cfg: FinetuneConfig) -> nn.Module:
    if cfg.head == "linear":
        return nn.Sequential(nn.Dropout(cfg.head_dropout), nn.Linear(in_features, cfg.num_outputs))
    return nn.Sequential(
        nn.Linear(in_features, in_features),
        nn.GELU(),
        nn.Dropout(cfg.head_dropout),
        nn.Linear(in_features, cfg.num_outputs),
    )


class FinetuneTask(CheckpointMetaMixin, pl.LightningModule):
    """``forward(x (B, 1, D, H, W, T)) -> (B, num_outputs)`` logits or standardised values."""

    checkpoint_kind = "finetune"

    def __init__(self, config: FinetuneConfig | dict):
        super().__init__()
        cfg = self._set_config(config, FinetuneConfig)
        cfg.num_outputs  # noqa: B018 - refuses an unresolved task='auto' before any loading
        self.model, self.init_report = build_encoder(cfg)
        self.head = _build_head(self.model.num_features, cfg)
        self._apply_mode()
        self._outputs: dict[str, list] = {}
        self.predictions: dict[str, object] = {}  # split -> per-subject DataFrame (after an epoch)

    # -- modes -------------------------------------------------------------------------------
    def _apply_mode(self) -> None:
        from swiftlib.models import group_parameters

        cfg = self.cfg
        if cfg.mode == "full":
            return
        for p in self.model.parameters():
            p.requires_grad_(False)
        if cfg.mode == "unfreeze":
            # block groups, stem excluded
            groups = [g for g in group_parameters(self.model)[1:] if g]
            k = (
                cfg.unfreeze_last_k
                if cfg.unfreeze_last_k is not None
                else max(1, math.ceil(cfg.unfreeze_fraction * len(groups)))
            )
            if k > len(groups):
                raise ValueError(
                    f"unfreeze_last_k={k} but {cfg.model!r} has {len(groups)} block groups"
                )
            params = dict(self.model.named_parameters())
            for names in groups[-k:]:
                for n in names:
                    params[n].requires_grad_(True)
            log.info("unfreeze: training the last %d of %d block groups", k, len(groups))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.mode == "linear_probe":
            self.model.eval()  # frozen features: no dropout / drop-path noise
        return self

    # -- forward / steps -----------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, D, H, W, T) -> (B, num_features)`` pooled embedding."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def _target(self, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.task == "classification":
            return y.long()
        return (y.float() - self.cfg.target_mean) / self.cfg.target_std

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.task == "classification":
            return F.cross_entropy(
                out.float(), self._target(y), label_smoothing=self.cfg.label_smoothing
            )
        return F.mse_loss(out.float().squeeze(1), self._target(y))

    def training_step(self, batch, batch_idx):
        out = self(batch.x)
        loss = self._loss(out, batch.y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step "
                f"{self.global_step}; stopping — the last good checkpoint is kept (lower the "
                "learning rate or use bf16/fp32)"
            )
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch.y)
        )
        return loss

    def _eval_step(self, split: str, batch) -> None:
        out = self(batch.x)
        loss = self._loss(out, batch.y)
        self.log(f"{split}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch.y))
        scores = out.float().softmax(-1) if self.cfg.task == "classification" else out.float()
        self._outputs.setdefault(split, []).append(
            (
                list(batch.subject_id),
                batch.window_start.cpu(),
                scores.detach().cpu(),
                batch.y.detach().float().cpu(),
            )
        )

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def predict_step(self, batch, batch_idx):
        out = self(batch.x).float()
        return (
            out.softmax(-1)
            if self.cfg.task == "classification"
            else out * self.cfg.target_std + self.cfg.target_mean
        )

    def on_validation_epoch_end(self):
        self._epoch_end("val")

    def on_test_epoch_end(self):
        self._epoch_end("test")

    def _epoch_end(self, split: str) -> None:
        rows = self._outputs.pop(split, [])
        rows = _gather(rows)
        if not rows:
            return
        df = subject_predictions(rows, self.cfg)
        self.predictions[split] = df  # fit() writes predictions_<split>.csv from here (rank 0)
        for name, value in subject_metrics(df, self.cfg).items():
            # identical on every rank after the gather
            self.log(f"{split}/{name}", value, sync_dist=True)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = param_groups(self, self.cfg.optim, encoder=self.model, encoder_prefix="model.")
        total = _total_steps(self)
        return _opt_and_sched(groups, self.cfg.optim, total)

    # -- checkpoint metadata -------------------------------------------------------------------
    def checkpoint_meta(self) -> dict:
        return {
            "label": self.cfg.label,
            "task": self.cfg.task,
            "num_classes": self.cfg.num_classes,
            "template_mismatch": self.cfg.template_mismatch,
            "mup": bool(self.cfg.optim.mup),
        }


def _opt_and_sched(groups, cfg, total):
    opt, sched = build_optimizer(groups, cfg, total)
    return {"optimizer": opt, "lr_scheduler": sched}


def _gather(rows: list) -> list:
    """Every rank's ``(subject_ids, starts, scores, targets)`` batches, on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    everything: list = [None] * dist.get_world_size()
    dist.all_gather_object(everything, rows)
    return [r for part in everything for r in part]


def subject_predictions(rows: list, cfg: FinetuneConfig):
    """Window outputs → one row per subject: mean score over the subject's distinct windows."""
    import pandas as pd

    sids = [s for r in rows for s in r[0]]
    starts = torch.cat([r[1] for r in rows]).numpy()
    scores = torch.cat([r[2] for r in rows]).numpy()
    targets = torch.cat([r[3] for r in rows]).numpy()
    cols = (
        [f"p{k}" for k in range(scores.shape[1])] if cfg.task == "classification" else ["pred_std"]
    )
    df = pd.DataFrame(scores, columns=cols)
    df["subject_id"], df["window_start"], df["target"] = sids, starts, targets
    # padded duplicates from a distributed sampler
    df = df.drop_duplicates(["subject_id", "window_start"])
    agg = df.groupby("subject_id", sort=True).agg(
        {**{c: "mean" for c in cols}, "target": "first", "window_start": "count"}
    )
    agg = agg.rename(columns={"window_start": "num_windows"}).reset_index()
    if cfg.task == "classification":
        agg["pred"] = agg[cols].to_numpy().argmax(1)
    else:
        agg["pred"] = agg["pred_std"] * cfg.target_std + cfg.target_mean
    return agg


def subject_metrics(df, cfg: FinetuneConfig) -> dict[str, float]:
    """Per-subject metrics with torchmetrics."""
    y = torch.tensor(df["target"].to_numpy(dtype="float64"))
    if cfg.task == "classification":
        probs = torch.tensor(
            df[[f"p{k}" for k in range(cfg.num_classes)]].to_numpy(dtype="float32")
        )
        yl = y.long()
        C = cfg.num_classes
        out = {
            "acc": tmf.classification.multiclass_accuracy(probs, yl, C, average="micro"),
            "balanced_acc": tmf.classification.multiclass_accuracy(probs, yl, C, average="macro"),
        }
        if len(torch.unique(yl)) < 2:
            out["auroc"] = torch.tensor(float("nan"))
        elif C == 2:
            out["auroc"] = tmf.classification.binary_auroc(probs[:, 1], yl)
        else:
            out["auroc"] = tmf.classification.multiclass_auroc(probs, yl, C)
    else:
        pred = torch.tensor(df["pred"].to_numpy(dtype="float32"))
        yf = y.float()
        out = {"mse": tmf.mean_squared_error(pred, yf), "mae": tmf.mean_absolute_error(pred, yf)}
        if len(yf) >= 2 and float(yf.var()) > 0:
            out["r2"] = tmf.r2_score(pred, yf)
            out["pearson"] = (
                tmf.pearson_corrcoef(pred, yf) if float(pred.var()) > 0 else torch.tensor(0.0)
            )
        else:
            out["r2"] = out["pearson"] = torch.tensor(float("nan"))
    out["num_subjects"] = torch.tensor(float(len(df)))
    return {k: float(v) for k, v in out.items()}
