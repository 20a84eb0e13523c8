"""``ContrastiveTask``: contrastive pretraining of a Swin4D encoder (NT-Xent, SwiFT v1).

SwiFT v1's public checkpoint was pretrained this way: two windows of the same scan (a
:class:`~swiftlib.data.pairs.PairBatch`: ``x1``, ``x2`` of shape ``(B, 1, D, H, W, T)``) go
through the encoder; their pooled embeddings ``(B, num_features)`` pass a projection MLP
(:class:`~swiftlib.models.heads.ProjectionHead`) to ``(B, proj_dim)``, and NT-Xent
(:func:`~swiftlib.models.heads.nt_xent_loss`, cosine similarity / ``temperature``) makes each
window pick its partner out of the other ``2B - 2`` windows of the batch. Negatives come
from the batch on each device (as SwiFT v1; no gathering across ranks). With
``mask_same_subject`` (default) a second pair of the anchor's own subject in the batch is
not counted as a negative; SwiFT v1 counted it (``False`` reproduces that).

Downstream tasks take the encoder (``model.`` in the checkpoint, as in SwiFT v1's
checkpoints; the projection is ``projection.``) through ``init_from``. Validation scores
fixed pairs of held-out subjects (batches of distinct subjects): ``val/nt_xent`` (the
monitored metric; chance is ``log(2B - 1)``), ``val/top1`` (how often a window's most similar
other window in the batch is its partner) and ``val/distance_ratio`` (on the encoder
embeddings downstream tasks see: mean distance between a subject's two windows over the
mean distance between windows of different subjects; < 1 = same-subject windows closer).
The projection's BatchNorm uses batch statistics in validation as in training, so
validation scores the function training optimises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from swiftlib.models.heads import ProjectionHead, nt_xent_loss
from swiftlib.tasks.common import CheckpointMetaMixin, build_encoder
from swiftlib.tasks.optim import OptimConfig, build_optimizer, param_groups
from swiftlib.tasks.optim import total_steps as _total_steps
from swiftlib.utils.config import config_from_dict, config_to_dict

__all__ = [
    "ContrastiveConfig",
    "ContrastiveTask",
    "CONTRASTIVE_MONITOR",
    "ENCODER_PREFIX",
    "distance_ratio",
]

log = logging.getLogger(__name__)

CONTRASTIVE_MONITOR = ("val/nt_xent", "min")
ENCODER_PREFIX = "model."  # where the encoder's weights live in a contrastive checkpoint


@dataclass
class ContrastiveConfig:
    """Contrastive (NT-Xent) pretraining of encoder preset ``model``; defaults follow SwiFT v1
    (temperature 0.1, 128-d projection, AdamW lr 1e-3, weight decay 0.01)."""

    model: str = "swift_v2_test"  # encoder preset
    model_overrides: dict = field(default_factory=dict)
    temperature: float = 0.1  # NT-Xent softmax temperature
    proj_hidden_dim: int = 512  # projection MLP hidden width
    proj_dim: int = 128  # projection output (the space the loss compares in)
    # other pairs of the anchor's subject are not negatives (SwiFT v1: False)
    mask_same_subject: bool = True
    # encoder weights: a contrastive / SimMIM / fine-tuned / SwiFT v1 checkpoint
    init_from: str | None = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.01))
    contract: dict | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = OptimConfig.from_dict(self.optim)
        if not self.temperature > 0:
            raise ValueError(
                f"ContrastiveConfig.temperature={self.temperature}: expected > 0 (SwiFT v1 used "
                "0.1)"
            )
        for name in ("proj_hidden_dim", "proj_dim"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"ContrastiveConfig.{name}={getattr(self, name)}: expected a positive width"
                )

    @classmethod
    def from_dict(cls, d) -> ContrastiveConfig:
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return config_to_dict(self)


def distance_ratio(e1: torch.Tensor, e2: torch.Tensor, subject_ids) -> torch.Tensor | None:
    """How much closer a subject's windows lie than windows of different subjects: the mean
    Euclidean distance between the two windows of each pair, over the mean distance between
    windows of different subjects, for embeddings ``e1``, ``e2`` ``(B, C)`` (row i: two windows
    of ``subject_ids[i]``). Scale-free; < 1 means same-subject windows are closer. None when
    the batch holds one subject."""
    e = torch.cat([e1, e2]).double()  # (2B, C)
    B = e1.shape[0]
    codes = {s: k for k, s in enumerate(dict.fromkeys(subject_ids))}
    g = torch.tensor([codes[s] for s in subject_ids], device=e.device).repeat(2)  # (2B,)
    other = g[:, None] != g[None, :]  # (2B, 2B)
    if not other.any():
        return None
    d = torch.cdist(e, e)  # (2B, 2B)
    same = d[torch.arange(B), torch.arange(B, 2 * B)].mean()
    return (same / d[other].mean().clamp(min=1e-12)).float()


class ContrastiveTask(CheckpointMetaMixin, pl.LightningModule):
    """``forward(x (B, 1, D, H, W, T)) -> (B, proj_dim)`` projections; :meth:`embed` gives the
    encoder embedding ``(B, num_features)`` downstream tasks use."""

    checkpoint_kind = "contrastive"

    def __init__(self, config: ContrastiveConfig | dict):
        super().__init__()
        cfg = self._set_config(config, ContrastiveConfig)
        self.model, self.init_report = build_encoder(cfg)
        # batch statistics in validation too: the projection only feeds the batch-level loss
        self.projection = ProjectionHead(
            self.model.num_features, cfg.proj_hidden_dim, cfg.proj_dim, track_running_stats=False
        )
        self._warned_small_batch = False

    # -- forward ------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, D, H, W, T) -> (B, num_features)`` pooled encoder embedding."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.embed(x))  # (B, proj_dim)

    def _pairs(self, batch):
        """Both windows in one encoder pass: embeddings ``(B, C)`` ×2 and the NT-Xent loss."""
        B = batch.x1.shape[0]
        e = self.embed(torch.cat([batch.x1, batch.x2]))  # (2B, C)
        z = self.projection(e)  # (2B, proj_dim)
        groups = batch.subject_id if self.cfg.mask_same_subject else None
        loss = nt_xent_loss(z[:B], z[B:], self.cfg.temperature, groups=groups)
        return loss, e[:B], e[B:], z

    # -- steps --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss, *_ = self._pairs(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step "
                f"{self.global_step}; stopping — the last good checkpoint is kept (lower the "
                "learning rate or use bf16/fp32)"
            )
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch.x1.shape[0],
        )
        return loss

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(5, dtype=torch.float64)  # loss·B, top1·B, B, Σ ratio, batches

    def validation_step(self, batch, batch_idx):
        B = batch.x1.shape[0]
        if B < 2 or len(set(batch.subject_id)) < 2:  # no negative to score against
            if not self._warned_small_batch:
                log.warning(
                    "contrastive validation: skipping a batch of %d pair(s) from %d subject(s); "
                    "scoring needs pairs of at least 2 subjects",
                    B,
                    len(set(batch.subject_id)),
                )
                self._warned_small_batch = True
            return
        loss, e1, e2, z = self._pairs(batch)
        top1 = _top1(z, batch.subject_id if self.cfg.mask_same_subject else None)
        ratio = distance_ratio(e1, e2, batch.subject_id)
        self._val_sums += torch.tensor(
            [float(loss) * B, float(top1) * B, B, float(ratio), 1.0], dtype=torch.float64
        )

    def on_validation_epoch_end(self):
        # summed over ranks here, once per epoch: a rank whose batches were all skipped (or that
        # has fewer of them) still takes part, so no rank waits on a metric another never logs
        sums = self.all_gather(self._val_sums.to(self.device, torch.float32)).double().cpu()
        sums = sums.reshape(-1, 5).sum(0)  # (5,)
        if sums[2] == 0:
            log.warning(
                "contrastive validation scored no batch (every batch held pairs of one subject)"
            )
        loss, top1, pairs, ratio, batches = sums.tolist()
        nan = float("nan")
        metrics = {
            "nt_xent": loss / pairs if pairs else nan,
            "top1": top1 / pairs if pairs else nan,
            "distance_ratio": ratio / batches if batches else nan,
        }
        for name, value in metrics.items():
            # identical on every rank after the gather
            self.log(f"val/{name}", value, prog_bar=name == "nt_xent", sync_dist=True)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = param_groups(
            self, self.cfg.optim, encoder=self.model, encoder_prefix=ENCODER_PREFIX
        )
        opt, sched = build_optimizer(groups, self.cfg.optim, _total_steps(self))
        return {"optimizer": opt, "lr_scheduler": sched}

    # -- checkpoint metadata -------------------------------------------------------------------
    def checkpoint_meta(self) -> dict:
        return {
            "encoder_prefix": ENCODER_PREFIX,
            "embedding_dim": int(self.model.num_features),
            "proj_dim": self.cfg.proj_dim,
            "temperature": self.cfg.temperature,
            "mup": bool(self.cfg.optim.mup),
        }


def _top1(z: torch.Tensor, groups) -> torch.Tensor:
    """Fraction of the 2B windows whose most similar other window (cosine, projection space)
    is their partner; rows of the anchor's own subject other than the partner are left out
    when ``groups`` is given, as in the loss."""
    n = z.shape[0]
    B = n // 2
    zn = F.normalize(z.float(), dim=1)
    sim = zn @ zn.t()  # (2B, 2B)
    partner = torch.cat([torch.arange(B, n), torch.arange(0, B)]).to(z.device)  # (2B,)
    drop = torch.eye(n, dtype=torch.bool, device=z.device)
    if groups is not None:
        codes = {s: k for k, s in enumerate(dict.fromkeys(groups))}
        g = torch.tensor([codes[s] for s in groups], device=z.device).repeat(2)
        same = g[:, None] == g[None, :]
        same[torch.arange(n, device=z.device), partner] = False
        drop |= same
    return (sim.masked_fill(drop, float("-inf")).argmax(1) == partner).float().mean()
