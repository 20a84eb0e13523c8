"""Axial rotary position encoding (RoPE, Su et al. 2021) for window attention.

Positions are the token coordinates inside a window ``(Wd, Wh, Ww, Wt)``; with shifted
windows the relative offsets of every unmasked pair are exact, which is all RoPE uses.
The head dimension is split evenly over the rotated axes (an even number of channels each);
leftover channels are not rotated. Tables are cached per (window, head_dim, axes, theta,
device, dtype).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

__all__ = ["rope_tables", "apply_rope"]


@functools.lru_cache(maxsize=128)
def _rope_tables(
    window_size: tuple[int, ...],
    head_dim: int,
    axes: tuple[int, ...],
    theta: float,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    n_axes = len(axes)
    per_axis = (head_dim // (2 * n_axes)) * 2  # rotated channels per axis (even)
    if per_axis == 0:
        raise ValueError(
            f"head_dim ({head_dim}) is too small for rotary encoding over {n_axes} axes: "
            f"it needs at least {2 * n_axes} channels"
        )
    coords = torch.stack(
        torch.meshgrid(*[torch.arange(w, dtype=torch.float64) for w in window_size], indexing="ij"),
        dim=-1,
    ).reshape(-1, len(window_size))  # (N, 4)
    N = coords.shape[0]
    angles = torch.zeros(N, head_dim // 2, dtype=torch.float64)  # (N, hd/2)
    half = per_axis // 2
    freqs = theta ** (-torch.arange(half, dtype=torch.float64) * 2.0 / per_axis)  # (half,)
    for i, axis in enumerate(axes):
        angles[:, i * half : (i + 1) * half] = coords[:, axis, None] * freqs[None, :]  # (N, half)
    angles = torch.cat([angles, angles], dim=-1)  # (N, hd) rotate-half layout
    return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)


def rope_tables(
    window_size: Sequence[int],
    head_dim: int,
    axes: Sequence[int],
    theta: float = 10000.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``(N, head_dim)`` for ``N = prod(window_size)`` tokens (cached)."""
    return _rope_tables(
        tuple(int(w) for w in window_size),
        int(head_dim),
        tuple(int(a) for a in axes),
        float(theta),
        torch.device(device),
        dtype,
    )


rope_tables.cache_info = _rope_tables.cache_info  # type: ignore[attr-defined]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x: (..., N, head_dim)`` by the tables ``(N, head_dim)``."""
    return x * cos + _rotate_half(x) * sin
