"""Heads on encoder features: pooled embeddings, classification / regression, contrastive.

Encoder features are volumes ``(B, C, D, H, W, T)`` (DESIGN §2). The embedding of a scan
window is the mean over all tokens (``num_features`` channels, reported by the encoder);
per-stage embeddings pool each stage's intermediate features and concatenate them.

* :class:`ClassifierHead` — pool → dropout → Linear(num_classes); every encoder owns one
  as ``encoder.head`` (``num_classes=0`` gives the pooled embedding). Regression is the same
  head with ``num_classes = number of targets`` (train with MSE); :class:`RegressionHead`
  is that, named.
* :class:`ProjectionHead` + :func:`nt_xent_loss` — SimCLR-style contrastive pretraining
  (:class:`~swiftlib.tasks.contrastive.ContrastiveTask`); the loss builds its masks on the
  inputs' device (no hard-coded CUDA) and can leave same-subject rows out of the negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "global_pool",
    "pooled_embedding",
    "ClassifierHead",
    "RegressionHead",
    "ProjectionHead",
    "NTXentLoss",
    "nt_xent_loss",
]


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over all tokens: ``(B, C, D, H, W, T) -> (B, C)`` (any number of trailing axes)."""
    if x.ndim < 3:
        raise ValueError(f"global_pool expects features (B, C, ...), got shape {tuple(x.shape)}")
    return x.flatten(2).mean(dim=-1)  # (B, C)


def pooled_embedding(
    encoder: nn.Module,
    x: torch.Tensor,
    per_stage: bool = False,
    indices: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Embedding of a batch of volumes.

    Args:
        encoder: a swiftlib encoder (``forward_features`` / ``forward_head`` /
            ``forward_intermediates``).
        x: ``(B, C_in, D, H, W, T)``.
        per_stage: also pool every stage (or ``indices``) and concatenate, giving
            ``(B, sum(stage channels))``; otherwise ``(B, encoder.num_features)`` (final norm
            applied, as the classifier sees it).
        indices: stages for ``per_stage`` (default: all).
    """
    if not per_stage:
        return encoder.forward_head(encoder.forward_features(x), pre_logits=True)  # (B, C)
    feats = encoder.forward_intermediates(x, indices=indices, intermediates_only=True)
    return torch.cat([global_pool(f) for f in feats], dim=1)  # (B, sum C_i)


class ClassifierHead(nn.Module):
    """Mean-pool → dropout → Linear. ``(B, C, D, H, W, T) -> (B, num_classes)``.

    ``num_classes=0`` makes ``fc`` an identity, so the head returns the pooled embedding.
    """

    def __init__(self, in_features: int, num_classes: int = 0, drop_rate: float = 0.0) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes ({num_classes}) must be ≥ 0 (0 = no classifier)")
        self.in_features = in_features
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, device: torch.device | str | None = None) -> None:
        """Replace the classifier with a fresh one with ``num_classes`` outputs (on ``device``,
        default: where the current one is, else CPU)."""
        if num_classes < 0:
            raise ValueError(f"num_classes ({num_classes}) must be ≥ 0 (0 = no classifier)")
        self.num_classes = num_classes
        if device is None:
            device = next(self.parameters(), torch.empty(0)).device
        self.fc = (
            nn.Linear(self.in_features, num_classes, device=device)
            if num_classes > 0
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = global_pool(x) if x.ndim > 2 else x  # (B, C)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class RegressionHead(ClassifierHead):
    """:class:`ClassifierHead` with ``num_targets`` continuous outputs (train with MSE)."""

    def __init__(self, in_features: int, num_targets: int = 1, drop_rate: float = 0.0) -> None:
        if num_targets < 1:
            raise ValueError(f"num_targets ({num_targets}) must be ≥ 1")
        super().__init__(in_features, num_targets, drop_rate)


class ProjectionHead(nn.Module):
    """SimCLR projection MLP: pooled ``(B, C)`` (or features ``(B, C, ...)``) → ``(B, out_dim)``.

    Linear → BatchNorm → ReLU → Linear (Chen et al. 2020). ``track_running_stats=False``
    normalises with the statistics of the batch in evaluation too (the head then needs
    batches of ≥ 2): for a head whose only use is a batch-level loss such as NT-Xent, so that
    validation scores the function training optimises. Pooled encoder embeddings share a
    large common component; running statistics of a short run leave part of it in, and
    every cosine similarity comes out ≈ 1.
    """

    def __init__(
        self,
        in_features: int,
        hidden_dim: int = 512,
        out_dim: int = 128,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if min(in_features, hidden_dim, out_dim) < 1:
            raise ValueError(
                f"in_features ({in_features}), hidden_dim ({hidden_dim}) and "
                f"out_dim ({out_dim}) must be ≥ 1"
            )
        self.fc1 = nn.Linear(in_features, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim, track_running_stats=track_running_stats)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = global_pool(x) if x.ndim > 2 else x  # (B, C)
        return self.fc2(self.act(self.bn(self.fc1(x))))  # (B, out_dim)


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    groups: Sequence | torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy) between two views.

    Args:
        z1, z2: ``(B, E)`` embeddings of the same B samples under two views; row i of ``z1``
            and row i of ``z2`` are the positive pair, all other 2B-2 rows negatives.
        temperature: softmax temperature (> 0).
        groups: optional ``(B,)`` group of each sample (e.g. subject ids): rows of the anchor's
            own group other than its positive — another pair of the same subject in the batch,
            a false negative — leave its softmax. None: every other row is a negative (SimCLR,
            SwiFT v1).

    Returns:
        scalar loss, averaged over the 2B anchors. Works on any device and dtype.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"nt_xent_loss expects two (B, E) tensors of the same shape, got "
            f"{tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 2:
        raise ValueError(
            f"nt_xent_loss needs a batch of at least 2 (got {z1.shape[0]}): "
            "with one sample there are no negatives"
        )
    if temperature <= 0:
        raise ValueError(f"temperature ({temperature}) must be > 0")
    B = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)  # (2B, E)
    sim = z @ z.t() / temperature  # (2B, 2B)
    targets = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)  # (2B,)
    drop = torch.eye(2 * B, dtype=torch.bool, device=z.device)  # (2B, 2B) self-similarity
    if groups is not None:
        g = _group_codes(groups, B).to(z.device).repeat(2)  # (2B,)
        same = g[:, None] == g[None, :]  # (2B, 2B)
        same[torch.arange(2 * B, device=z.device), targets] = False  # keep each anchor's positive
        drop |= same
    sim = sim.masked_fill(drop, float("-inf"))
    return F.cross_entropy(sim, targets)


def _group_codes(groups: Sequence | torch.Tensor, n: int) -> torch.Tensor:
    """``(n,)`` integer codes of ``groups`` (any hashable values, or a tensor)."""
    if isinstance(groups, torch.Tensor):
        codes = groups.reshape(-1).long()
    else:
        index: dict = {}
        codes = torch.tensor([index.setdefault(v, len(index)) for v in groups], dtype=torch.long)
    if codes.numel() != n:
        raise ValueError(f"groups has {codes.numel()} entries; expected one per sample ({n})")
    return codes


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent_loss`."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature ({temperature}) must be > 0")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(z1, z2, self.temperature)
