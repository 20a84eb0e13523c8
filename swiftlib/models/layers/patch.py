"""4D patch embedding (one Linear per voxel block) and spatial 2×2×2 patch merging."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .helpers import check_input_grid, to_ntuple

__all__ = ["PatchEmbed4D", "PatchMerging3D"]


class PatchEmbed4D(nn.Module):
    """Embed non-overlapping ``(pD, pH, pW, pT)`` voxel blocks with one Linear.

    ``x: (B, C, D, H, W, T) -> tokens (B, D/pD, H/pH, W/pW, T/pT, embed_dim)``.

    Each block is flattened in ``(pD, pH, pW, pT, C)`` order (as SwiFT v1's ``PatchEmbed``),
    so a SwiFT v1 ``patch_embed.fc`` weight loads unchanged into ``proj``.

    The input rule (the model's ``grid_multiple`` plus optional exact / maximum sizes) is
    checked here, where the volume enters the model; the error says how to pad.
    """

    def __init__(
        self,
        patch_size: Sequence[int] = (6, 6, 6, 1),
        in_chans: int = 1,
        embed_dim: int = 36,
        norm_layer: type[nn.Module] | None = None,
        grid_multiple: Sequence[int] | None = None,
        required_shape: Sequence[int | None] | None = None,
        max_shape: Sequence[int | None] | None = None,
        model_name: str = "model",
    ) -> None:
        super().__init__()
        self.patch_size = to_ntuple(patch_size, 4, "patch_size")
        if any(int(p) < 1 for p in self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} must be positive on every axis")
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.grid_multiple = to_ntuple(grid_multiple or self.patch_size, 4, "grid_multiple")
        self.required_shape = required_shape
        self.max_shape = max_shape
        self.model_name = model_name
        self.proj = nn.Linear(in_chans * math.prod(self.patch_size), embed_dim)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, D, H, W, T) -> (B, D', H', W', T', embed_dim)."""
        check_input_grid(
            x.shape,
            self.grid_multiple,
            self.required_shape,
            self.max_shape,
            self.in_chans,
            self.model_name,
        )
        B, C, D, H, W, T = x.shape
        pd, ph, pw, pt = self.patch_size
        x = x.view(
            B, C, D // pd, pd, H // ph, ph, W // pw, pw, T // pt, pt
        )  # (B, C, D', pd, H', ph, W', pw, T', pt)
        x = x.permute(0, 2, 4, 6, 8, 3, 5, 7, 9, 1)  # (B, D', H', W', T', pd, ph, pw, pt, C)
        x = x.reshape(
            B, D // pd, H // ph, W // pw, T // pt, -1
        )  # (B, D', H', W', T', pd*ph*pw*pt*C)
        return self.norm(self.proj(x))  # (B, D', H', W', T', E)


class PatchMerging3D(nn.Module):
    """Spatial-only 2×2×2 patch merging (time untouched): LayerNorm(8C) then Linear(8C → out).

    ``x: (B, D, H, W, T, C) -> (B, D/2, H/2, W/2, T, out_dim)``. The 8 neighbours are
    concatenated with the D offset slowest and the W offset fastest, as SwiFT v1's
    ``PatchMergingV2`` (``torch.cat([x[:, i::2, j::2, k::2] for i, j, k in product(...)])``).
    """

    def __init__(
        self, dim: int, out_dim: int | None = None, norm_layer: type[nn.Module] = nn.LayerNorm
    ) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(8 * dim)
        self.reduction = nn.Linear(8 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, D, H, W, T, C = x.shape
        if D % 2 or H % 2 or W % 2:
            raise ValueError(
                f"patch merging needs an even token grid on D, H, W; got {D}×{H}×{W} "
                "(check the input size against model.grid_multiple)"
            )
        x = x.view(B, D // 2, 2, H // 2, 2, W // 2, 2, T, C)  # (B, D/2, i, H/2, j, W/2, k, T, C)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6, 8)  # (B, D/2, H/2, W/2, T, i, j, k, C)
        x = x.reshape(B, D // 2, H // 2, W // 2, T, 8 * C)  # (B, D/2, H/2, W/2, T, 8C)
        return self.reduction(self.norm(x))  # (B, D/2, H/2, W/2, T, out_dim)
