"""``SimMIMTask``: masked-voxel pretraining of a Swin4D encoder (SimMIM).

Each step masks blocks of patch tokens, reconstructs the voxels and scores the masked
*brain* voxels only (the background of a store window is one constant, the in-brain
minimum, so brain voxels are those that differ from the window's corner value at some
frame). Validation also scores a **mean predictor** — every masked voxel predicted as the
mean of the visible brain voxels of its window — so ``val/recon_ratio`` < 1 means the
model learned more than the average intensity. Masks are drawn from a generator seeded
by ``(seed, global step)`` (validation: ``(seed, batch index)``), so a resumed run draws the
same masks as an uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import lightning.pytorch as pl
import torch

from swiftlib.tasks.common import CheckpointMetaMixin, load_encoder_weights
from swiftlib.tasks.optim import OptimConfig, build_optimizer, param_groups
from swiftlib.tasks.optim import total_steps as _total_steps
from swiftlib.utils.config import config_from_dict, config_to_dict

__all__ = ["PretrainConfig", "SimMIMTask", "PRETRAIN_MONITOR", "brain_mask_from_window"]

log = logging.getLogger(__name__)

PRETRAIN_MONITOR = ("val/recon_loss", "min")


@dataclass
class PretrainConfig:
    """SimMIM pretraining of encoder preset ``model``."""

    model: str = "swift_v2_test"  # encoder preset
    model_overrides: dict = field(default_factory=dict)
    mask_ratio: float = 0.5  # fraction of mask blocks hidden (0.2–0.8)
    mask_patch: tuple[int, int, int, int] = (2, 2, 2, 1)  # tokens per mask block (d, h, w, t)
    mask_strategy: Literal["random", "tube", "block"] = "random"
    loss: Literal["l1", "l2", "smooth_l1"] = "l1"
    brain_only: bool = True  # score masked brain voxels only
    init_from: str | None = None  # continue from another pretraining checkpoint (weights only)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1.5e-3, weight_decay=0.05))
    num_examples: int = 2  # reconstructions kept from validation for viewing
    contract: dict | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = OptimConfig.from_dict(self.optim)
        if not 0.2 <= self.mask_ratio <= 0.8:
            raise ValueError(f"PretrainConfig.mask_ratio={self.mask_ratio}: expected in [0.2, 0.8]")
        self.mask_patch = tuple(int(v) for v in self.mask_patch)

    @classmethod
    def from_dict(cls, d) -> PretrainConfig:
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return config_to_dict(self)


def brain_mask_from_window(x: torch.Tensor) -> torch.Tensor:
    """``x (B, C, D, H, W, T)`` → bool ``(B, 1, D, H, W)``: voxels that differ from the
    window's background value (its corner voxel) at some frame."""
    bg = x[:, :, :1, :1, :1, :1]  # (B, C, 1, 1, 1, 1)
    return (x != bg).any(dim=-1).any(dim=1, keepdim=True)  # (B, 1, D, H, W)


class SimMIMTask(CheckpointMetaMixin, pl.LightningModule):
    checkpoint_kind = "pretrain"

    def __init__(self, config: PretrainConfig | dict):
        super().__init__()
        cfg = self._set_config(config, PretrainConfig)
        from swiftlib.models import create_model
        from swiftlib.models.simmim import SimMIM, SimMIMConfig

        encoder = create_model(cfg.model, **{**cfg.model_overrides, "num_classes": 0})
        # SimMIM decodes the last stage's tokens, not the pooled embedding: the encoder's final
        # norm gets no gradient, which DDP would report as an unused parameter
        encoder.norm.requires_grad_(False)
        if cfg.init_from:
            load_encoder_weights(
                encoder, cfg.init_from, cfg.model, cfg.model_overrides, cfg.contract
            )
        scfg = SimMIMConfig(
            encoder=cfg.model,
            encoder_overrides=dict(cfg.model_overrides),
            mask_ratio=cfg.mask_ratio,
            mask_patch=cfg.mask_patch,
            mask_strategy=cfg.mask_strategy,
            loss=cfg.loss,
            brain_only=False,
            seed=cfg.seed,
        )
        self.model = SimMIM(scfg, encoder=encoder)
        # a few validation reconstructions (CPU, float16); fit() saves them
        self.examples: list[dict] = []

    def forward(self, x, mask=None, brain_mask=None):
        return self.model(x, mask=mask, brain_mask=brain_mask)

    def _masks(self, x: torch.Tensor, key: int) -> torch.Tensor:
        gen = self.model.mask_generator
        gen.generator = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + int(key))
        token_grid = self._token_grid(x)
        return gen(x.shape[0], token_grid, device=x.device)

    def _token_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        patch = self.model.patch_size
        return tuple(s // p for s, p in zip(x.shape[2:], patch))

    def _step(self, x: torch.Tensor, key: int):
        brain = brain_mask_from_window(x) if self.cfg.brain_only else None
        out = self.model(x, mask=self._masks(x, key), brain_mask=brain)
        return out, brain

    def training_step(self, batch, batch_idx):
        # key by step and rank so ranks draw different masks
        out, _ = self._step(
            batch.x, self.global_step * max(1, self.trainer.world_size) + self.global_rank
        )
        if not torch.isfinite(out.loss):
            raise FloatingPointError(
                f"non-finite SimMIM loss ({out.loss.item()}) at epoch {self.current_epoch}, step "
                f"{self.global_step}; stopping — the last good checkpoint is kept (lower the "
                "learning rate or use bf16/fp32)"
            )
        self.log(
            "train/loss",
            out.loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch.x.shape[0],
        )
        return out.loss

    def validation_step(self, batch, batch_idx):
        x = batch.x
        out, brain = self._step(x, 10**9 + batch_idx)  # fixed validation masks
        visible = (
            ~out.mask if brain is None else (~out.mask & brain[..., None])
        )  # (B, 1, D, H, W, T)
        w = visible.to(x.dtype)
        mean = (x * w).sum(dim=(1, 2, 3, 4, 5), keepdim=True) / w.sum(
            dim=(1, 2, 3, 4, 5), keepdim=True
        ).clamp(min=1)
        mean_loss = self.model.reconstruction_loss(mean.expand_as(x), x, out.mask, brain)
        B = x.shape[0]
        self.log(
            "val/recon_loss", out.loss, on_epoch=True, sync_dist=True, batch_size=B, prog_bar=True
        )
        self.log("val/mean_predictor_loss", mean_loss, on_epoch=True, sync_dist=True, batch_size=B)
        if batch_idx == 0 and self.global_rank == 0:
            self.examples = [
                {
                    "subject_id": batch.subject_id[i],
                    "window_start": int(batch.window_start[i]),
                    "input": x[i, 0].detach().cpu().half(),
                    "reconstruction": out.reconstruction[i, 0].detach().cpu().half(),
                    "mask": out.mask[i, 0].detach().cpu(),
                }
                for i in range(min(self.cfg.num_examples, B))
            ]

    def on_validation_epoch_end(self):
        m = self.trainer.callback_metrics
        if "val/recon_loss" in m and "val/mean_predictor_loss" in m:
            ratio = m["val/recon_loss"] / m["val/mean_predictor_loss"].clamp(min=1e-12)
            self.log("val/recon_ratio", ratio, sync_dist=True)

    def checkpoint_meta(self) -> dict:
        return {"mup": bool(self.cfg.optim.mup)}  # µP learning rates (optim.mup)

    def configure_optimizers(self):
        groups = param_groups(
            self, self.cfg.optim, encoder=self.model.encoder, encoder_prefix="model.encoder."
        )
        total = _total_steps(self)
        opt, sched = build_optimizer(groups, self.cfg.optim, total)
        return {"optimizer": opt, "lr_scheduler": sched}
