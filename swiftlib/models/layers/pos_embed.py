"""Learned absolute position tables: one spatial ``(C, d, h, w)`` and one temporal ``(C, t)``.

As SwiFT v1's ``PositionalEmbedding``: parameters ``pos_embed (1, C, d, h, w, 1)`` and
``time_embed (1, C, 1, 1, 1, t)`` (the published shapes, so checkpoints load unchanged),
truncated-normal(0.02) init, added to the tokens before each stage; the temporal table is
sliced to shorter inputs. With ``interpolate=True`` (SwiFT v2) tables are resampled to other
grids instead of raising.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .helpers import format_grid

__all__ = ["AbsolutePosEmbed4D"]


class AbsolutePosEmbed4D(nn.Module):
    """Add learned spatial + temporal tables to tokens ``(B, D, H, W, T, C)``."""

    def __init__(self, dim: int, grid: Sequence[int], interpolate: bool = False) -> None:
        super().__init__()
        d, h, w, t = (int(g) for g in grid)
        self.dim = dim
        self.grid = (d, h, w, t)
        self.interpolate = interpolate
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, d, h, w, 1))
        self.time_embed = nn.Parameter(torch.zeros(1, dim, 1, 1, 1, t))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, D, H, W, T, C = x.shape
        d, h, w, t = self.grid
        pos = self.pos_embed
        time = self.time_embed
        if (D, H, W) != (d, h, w):
            if not self.interpolate:
                raise ValueError(
                    f"token grid {format_grid((D, H, W))} does not match the spatial position "
                    f"table {format_grid((d, h, w))}: this model was built for that grid "
                    "(img_size); pad/crop the input or build the model with img_size matching it"
                )
            pos = F.interpolate(pos[..., 0], size=(D, H, W), mode="trilinear", align_corners=False)[
                ..., None
            ]  # (1, C, D, H, W, 1)
        if T <= t:
            time = time[..., :T]  # (1, C, 1, 1, 1, T)
        elif self.interpolate:
            time = F.interpolate(
                time.reshape(1, C, t), size=T, mode="linear", align_corners=False
            ).reshape(1, C, 1, 1, 1, T)  # (1, C, 1, 1, 1, T)
        else:
            raise ValueError(
                f"input has {T} token frames but the temporal position table has {t}; "
                "use at most that many frames or build the model with a longer img_size[3]"
            )
        x = x + pos.permute(0, 2, 3, 4, 5, 1)  # (B, D, H, W, T, C) + (1, D, H, W, 1, C)
        return x + time.permute(0, 2, 3, 4, 5, 1)  # + (1, 1, 1, 1, T, C)
