"""The encoder interface shared by the Swin4D families (SwiFT v1 and v2).

Every encoder is ``patch_embed`` → ``forward_tokens`` (stages) and exposes the timm-style
interface: ``forward_features``, ``forward_head``, ``forward``, ``forward_intermediates``,
``no_weight_decay``, ``group_matcher``, ``set_grad_checkpointing``, ``reset_classifier``,
``num_features``, ``num_classes``, ``grid_multiple`` / ``required_shape`` (input rule).

The split ``forward_features(x) = forward_tokens(patch_embed(x))`` lets SimMIM replace
tokens by a mask token between the two calls (position tables are added inside
``forward_tokens``, so masked tokens get positions too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from .layers.helpers import grid_padding

__all__ = ["Swin4DEncoderMixin", "fit_padding", "group_parameters"]

# Sort keys for group_matcher entries that follow every block of their stage: a stage's patch
# merging comes after its blocks, the final norm after everything (larger than any block index).
AFTER_BLOCKS = 99_998
LAST = 99_999


def tokens_to_volume(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W, T, C) -> (B, C, D, H, W, T) (contiguous)."""
    return x.permute(0, 5, 1, 2, 3, 4).contiguous()  # (B, C, D, H, W, T)


def volume_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W, T) -> (B, D, H, W, T, C) (a view)."""
    return x.permute(0, 2, 3, 4, 5, 1)  # (B, D, H, W, T, C)


class Swin4DEncoderMixin:
    """Interface methods; the model defines ``patch_embed``, ``pos_drop``, ``stages`` (each
    with ``forward_blocks(x, checkpoint)`` and ``downsample``), ``norm``, ``head``,
    ``num_features``, ``grid_multiple``, ``required_shape``, ``max_shape``."""

    grad_checkpointing: bool
    stages: nn.ModuleList

    # ---- input grid -----------------------------------------------------------------
    def input_rule(self) -> str:
        """Human-readable input rule, e.g. ``'D, H, W divisible by 48; T any'``."""
        parts = []
        for axis, m, r, mx in zip(
            "DHWT", self.grid_multiple, self.required_shape, self.max_shape, strict=True
        ):
            if r is not None:
                parts.append(f"{axis} = {r}")
            else:
                part = f"{axis} divisible by {m}" if m > 1 else f"{axis} any"
                parts.append(part + (f" (≤ {mx})" if mx is not None else ""))
        return ", ".join(parts)

    # ---- forward ----------------------------------------------------------------------
    def _run_stages(
        self, x: torch.Tensor, take: set[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """tokens (B, D', H', W', T', C) -> final tokens and selected stage outputs."""
        intermediates = []
        x = self.pos_drop(x)
        for i, stage in enumerate(self.stages):
            x = stage.forward_blocks(
                x, checkpoint=self.grad_checkpointing and self.training and torch.is_grad_enabled()
            )
            if take is not None and i in take:
                intermediates.append(tokens_to_volume(x))  # (B, C_i, D_i, H_i, W_i, T_i)
            x = stage.downsample(x)
        return x, intermediates

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Run the stages on patch tokens.

        Args:
            x: tokens ``(B, D', H', W', T', embed_dim)`` from ``self.patch_embed`` (possibly
                with some replaced by a mask token).

        Returns:
            features ``(B, num_features, D_L, H_L, W_L, T_L)``.
        """
        x, _ = self._run_stages(x)
        return tokens_to_volume(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, D, H, W, T) -> (B, num_features, D_L, H_L, W_L, T_L)``."""
        return self.forward_tokens(self.patch_embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features ``(B, C, D, H, W, T)`` → final norm per token → mean pool → classifier.

        Returns ``(B, num_features)`` with ``pre_logits=True`` (the embedding), else
        ``(B, num_classes)`` (or the embedding when ``num_classes == 0``).
        """
        x = self.norm(volume_to_tokens(x))  # (B, D, H, W, T, C)
        x = x.flatten(1, 4).mean(dim=1)  # (B, C)
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (before each stage's patch merging).

        Args:
            x: ``(B, C_in, D, H, W, T)``.
            indices: stage indices (negative allowed), or an int n = the last n stages;
                ``None`` = all stages.
            intermediates_only: return only the list.

        Returns:
            ``[ (B, C_i, D_i, H_i, W_i, T_i), ... ]`` in stage order, and unless
            ``intermediates_only`` the final features first: ``(final, list)``.
        """
        n = len(self.stages)
        if indices is None:
            take = list(range(n))
        elif isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(f"indices ({indices}) must be in [1, {n}] (the last n stages)")
            take = list(range(n - indices, n))
        else:
            take = []
            for i in indices:
                if not -n <= i < n:
                    raise ValueError(f"stage index {i} out of range for {n} stages")
                take.append(i % n)
        x, inter = self._run_stages(self.patch_embed(x), set(take))
        if intermediates_only:
            return inter
        return tokens_to_volume(x), inter

    # ---- optimisation helpers ---------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay: position tables, mask tokens,
        LayerScale gammas, norms and biases (every parameter with ≤ 1 dimension)."""
        special = ("pos_embed", "time_embed", "mask_token", "gamma")
        return {
            n for n, p in self.named_parameters() if p.ndim <= 1 or n.rsplit(".", 1)[-1] in special
        }

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style parameter groups: ``stem`` then ``blocks`` (ordered, for layer-wise LR
        decay and partial unfreezing). Coarse = one group per stage; fine = one per block,
        with a stage's patch merging after its blocks and the final norm last."""
        return {
            "stem": r"^patch_embed|^mask_token",
            "blocks": r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.pos_embed", (-1,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.downsample", (AFTER_BLOCKS,)),
                (r"^norm", (LAST,)),
            ],
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward (training only)."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (``0`` = none, ``forward`` returns the embedding)."""
        self.head.reset(num_classes, device=self.norm.weight.device)
        self.num_classes = num_classes


def checkpoint_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpoint: bool) -> torch.Tensor:
    """Run ``blocks`` in order, each under activation checkpointing when asked."""
    for blk in blocks:
        if checkpoint:
            x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
        else:
            x = blk(x)
    return x


def group_parameters(model: nn.Module, coarse: bool = False) -> list[list[str]]:
    """Ordered parameter-name groups from ``model.group_matcher`` (stem first, then blocks in
    depth order; unmatched parameters, e.g. the classifier, form the last group).

    Layer-wise LR decay scales group ``g`` by ``decay ** (len(groups) - 1 - g)``; partial
    unfreezing trains the last k groups.
    """
    matcher = model.group_matcher(coarse=coarse)
    keyed: dict[tuple, list[str]] = {}
    for name, _ in model.named_parameters():
        key = None
        if re.match(matcher["stem"], name):
            key = (-(10**9),)
        else:
            blocks = matcher["blocks"]
            rules = [(blocks, None)] if isinstance(blocks, str) else blocks
            for pattern, suffix in rules:
                m = re.match(pattern, name)
                if m:
                    key = tuple(int(g) for g in m.groups()) + tuple(suffix or ())
                    break
        if key is None:
            key = (10**9,)
        keyed.setdefault(key, []).append(name)
    return [keyed[k] for k in sorted(keyed)]


def fit_padding(shape_dhwt: Sequence[int], model_or_cfg: Any) -> tuple[int, int, int, int]:
    """Per-axis padding ``(pD, pH, pW, pT)`` that makes a ``(D, H, W, T)`` grid fit a model.

    ``model_or_cfg``: a swiftlib encoder, a SimMIM model, a config dataclass, or a preset
    name. Pad at the end of each axis (or split it between both ends to keep the brain
    centred). Example: ``fit_padding((64, 64, 48, 20), "swift_v2_51m") == (32, 32, 0, 0)``.
    """
    rule = _input_rule(model_or_cfg)
    return grid_padding(shape_dhwt, rule[0], rule[1])


def _input_rule(obj: Any) -> tuple[tuple[int, ...], tuple]:
    if isinstance(obj, str):
        from ._registry import get_model_config

        obj = get_model_config(obj)
    if isinstance(obj, nn.Module):
        enc = obj if hasattr(obj, "grid_multiple") else getattr(obj, "encoder", obj)
        return tuple(enc.grid_multiple), tuple(enc.required_shape)
    if hasattr(obj, "grid_rule"):
        return obj.grid_rule()
    raise TypeError(
        f"fit_padding needs an encoder, a config or a preset name, got {type(obj).__name__}"
    )
