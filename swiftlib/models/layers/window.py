"""4D window helpers: window clipping, partition / reverse, and cached shift masks.

Follows the Swin Transformer recipe (Liu et al. 2021) extended to four axes as in SwiFT v1:
windows larger than the feature grid are clipped to it (and those axes get no shift),
the grid is zero-padded to a multiple of the window, odd blocks roll the grid by
``-shift`` and use an additive mask (``-100``) between tokens that came from different
regions of the unrolled grid.

Masks depend only on (padded grid, window, shift, valid grid) and are built once per key
and device (``functools.lru_cache``), never per forward.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "clip_window",
    "window_padding",
    "window_partition",
    "window_reverse",
    "compute_attn_mask",
    "window_gather_index",
    "permute_tokens",
]

_logger = logging.getLogger(__name__)

Grid4 = tuple[int, int, int, int]


def clip_window(
    grid: Sequence[int], window_size: Sequence[int], shift_size: Sequence[int]
) -> tuple[Grid4, Grid4]:
    """Clip ``window_size`` to ``grid`` (SwiFT v1 rule): where ``grid[i] <= window[i]`` the
    window becomes ``grid[i]`` and that axis is not shifted."""
    window = list(window_size)
    shift = list(shift_size)
    for i, (g, w) in enumerate(zip(grid, window_size, strict=True)):
        if g <= w:
            window[i] = int(g)
            shift[i] = 0
    return tuple(window), tuple(shift)  # type: ignore[return-value]


def window_padding(grid: Sequence[int], window_size: Sequence[int]) -> Grid4:
    """Zeros to append on each axis so ``grid`` becomes a multiple of ``window_size``."""
    return tuple((w - g % w) % w for g, w in zip(grid, window_size, strict=True))  # type: ignore[return-value]


def window_partition(x: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """Split a token grid into non-overlapping windows.

    Args:
        x: tokens ``(B, D, H, W, T, C)``; each of D, H, W, T divisible by its window.
        window_size: ``(Wd, Wh, Ww, Wt)``.

    Returns:
        windows ``(B*nW, Wd*Wh*Ww*Wt, C)``, window index in row-major (D, H, W, T) order.
    """
    B, D, H, W, T, C = x.shape
    wd, wh, ww, wt = window_size
    x = x.view(
        B, D // wd, wd, H // wh, wh, W // ww, ww, T // wt, wt, C
    )  # (B, nD, wd, nH, wh, nW, ww, nT, wt, C)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6, 8, 9)  # (B, nD, nH, nW, nT, wd, wh, ww, wt, C)
    return x.reshape(-1, wd * wh * ww * wt, C)  # (B*nW, N, C)


def window_reverse(
    windows: torch.Tensor, window_size: Sequence[int], grid: Sequence[int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: ``(B*nW, Wd*Wh*Ww*Wt, C)``.
        window_size: ``(Wd, Wh, Ww, Wt)``.
        grid: padded grid ``(D, H, W, T)``.

    Returns:
        tokens ``(B, D, H, W, T, C)``.
    """
    D, H, W, T = grid
    wd, wh, ww, wt = window_size
    C = windows.shape[-1]
    num_windows = (D // wd) * (H // wh) * (W // ww) * (T // wt)
    B = windows.shape[0] // num_windows
    x = windows.view(
        B, D // wd, H // wh, W // ww, T // wt, wd, wh, ww, wt, C
    )  # (B, nD, nH, nW, nT, wd, wh, ww, wt, C)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4, 8, 9)  # (B, nD, wd, nH, wh, nW, ww, nT, wt, C)
    return x.reshape(B, D, H, W, T, C)  # (B, D, H, W, T, C)


def _region_labels(size: int, window: int, shift: int) -> np.ndarray:
    """Region index per position along one axis of the padded, rolled grid (0, 1, 2)."""
    labels = np.zeros(size, dtype=np.int64)
    if shift > 0:
        labels[size - window : size - shift] = 1
        labels[size - shift :] = 2
    return labels


@functools.lru_cache(maxsize=128)
def _attn_mask_numpy(
    grid: Grid4, window_size: Grid4, shift_size: Grid4, valid_grid: Grid4 | None, mask_value: float
) -> np.ndarray | None:
    """Build the additive mask ``(nW, N, N)`` as float32 numpy (cached)."""
    has_shift = any(s > 0 for s in shift_size)
    has_pad = valid_grid is not None and tuple(valid_grid) != tuple(grid)
    if not (has_shift or has_pad):
        return None
    _logger.debug(
        "building attention mask grid=%s window=%s shift=%s valid=%s",
        grid,
        window_size,
        shift_size,
        valid_grid,
    )
    # Region label of every token of the rolled grid; tokens attend only within one region.
    per_axis = [
        _region_labels(g, w, s) for g, w, s in zip(grid, window_size, shift_size, strict=True)
    ]
    ld, lh, lw, lt = np.meshgrid(*per_axis, indexing="ij")
    labels = ((ld * 3 + lh) * 3 + lw) * 3 + lt  # (D, H, W, T)
    labels = torch.from_numpy(labels)[None, ..., None].float()  # (1, D, H, W, T, 1)
    label_windows = window_partition(labels, window_size).squeeze(-1)  # (nW, N)
    mask = (
        label_windows[:, None, :] != label_windows[:, :, None]
    ).float() * mask_value  # (nW, N, N)
    if has_pad:
        # Padded positions (in rolled coordinates) are never attended to as keys.
        valid = np.zeros(grid, dtype=np.float32)
        valid[: valid_grid[0], : valid_grid[1], : valid_grid[2], : valid_grid[3]] = 1.0
        valid = np.roll(valid, shift=[-s for s in shift_size], axis=(0, 1, 2, 3))
        valid = torch.from_numpy(valid)[None, ..., None]  # (1, D, H, W, T, 1)
        valid_windows = window_partition(valid, window_size).squeeze(-1)  # (nW, N)
        mask = mask.masked_fill(valid_windows[:, None, :] == 0, mask_value)  # (nW, N, N)
    return mask.numpy()


@functools.lru_cache(maxsize=256)
def _attn_mask_tensor(
    grid: Grid4,
    window_size: Grid4,
    shift_size: Grid4,
    valid_grid: Grid4 | None,
    mask_value: float,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    mask = _attn_mask_numpy(grid, window_size, shift_size, valid_grid, mask_value)
    if mask is None:
        return None
    # cached: a first call under inference_mode must not make an inference tensor
    with torch.inference_mode(False):
        return torch.from_numpy(mask).to(device=device, dtype=dtype)


def compute_attn_mask(
    grid: Sequence[int],
    window_size: Sequence[int],
    shift_size: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    valid_grid: Sequence[int] | None = None,
    mask_value: float = -100.0,
) -> torch.Tensor | None:
    """Additive attention mask ``(nW, N, N)`` for a (padded, rolled) grid, cached per key.

    Args:
        grid: padded grid ``(D, H, W, T)`` (a multiple of ``window_size``).
        window_size: clipped window ``(Wd, Wh, Ww, Wt)``.
        shift_size: clipped shift; axes with 0 get no region split.
        valid_grid: unpadded grid; when given and smaller than ``grid``, padded tokens are
            masked as keys (SwiFT v2). ``None`` keeps the SwiFT v1 behaviour (padding visible).
        mask_value: value added between tokens of different regions (``-100`` as published).

    Returns:
        ``None`` when nothing needs masking, else a cached tensor ``(nW, N, N)`` with 0 for
        allowed pairs and ``mask_value`` otherwise. Treat it as read-only.
    """
    key_valid = None if valid_grid is None else tuple(int(v) for v in valid_grid)
    return _attn_mask_tensor(
        tuple(int(g) for g in grid),
        tuple(int(w) for w in window_size),
        tuple(int(s) for s in shift_size),
        key_valid,
        float(mask_value),
        torch.device(device),
        dtype,
    )


compute_attn_mask.cache_info = _attn_mask_tensor.cache_info  # type: ignore[attr-defined]
compute_attn_mask.cache_clear = _attn_mask_tensor.cache_clear  # type: ignore[attr-defined]
compute_attn_mask.build_cache_info = _attn_mask_numpy.cache_info  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=256)
def _gather_index(
    grid: Grid4, window_size: Grid4, shift_size: Grid4, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # cached across calls: built outside inference_mode even when first needed by an evaluation,
    # else training later saves an inference tensor for backward (a RuntimeError)
    with torch.inference_mode(False):
        L = math.prod(grid)
        pos = torch.arange(L).view(1, *grid, 1)  # (1, D, H, W, T, 1) flat token index
        if any(s > 0 for s in shift_size):
            pos = torch.roll(pos, shifts=tuple(-s for s in shift_size), dims=(1, 2, 3, 4))
        idx = window_partition(pos, window_size).reshape(L)  # (L,) window-ordered source index
        inv = torch.argsort(idx)  # (L,)
        return idx.to(device), inv.to(device)


def window_gather_index(
    grid: Sequence[int],
    window_size: Sequence[int],
    shift_size: Sequence[int],
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached ``(idx, inv)`` so that ``tokens[:, idx]`` equals rolling the grid by ``-shift``
    and partitioning it into windows (flattened to ``(B, nW*N, C)``), and ``[:, inv]`` undoes
    it. One gather replaces ``torch.roll`` on four axes (four copies) plus the partition copy.
    """
    return _gather_index(
        tuple(int(g) for g in grid),
        tuple(int(w) for w in window_size),
        tuple(int(s) for s in shift_size),
        torch.device(device),
    )


window_gather_index.cache_info = _gather_index.cache_info  # type: ignore[attr-defined]


class _PermuteTokens(torch.autograd.Function):
    """``x.index_select(1, idx)`` for a permutation ``idx``; backward gathers with ``inv``
    (instead of a scatter-add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inv)
        return x.index_select(1, idx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inv,) = ctx.saved_tensors
        return grad.index_select(1, inv), None, None


def permute_tokens(x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """Reorder tokens ``(B, L, C)`` by the permutation ``idx`` (``inv`` = its inverse)."""
    return _PermuteTokens.apply(x, idx, inv)


def num_windows(grid: Sequence[int], window_size: Sequence[int]) -> int:
    """Number of windows of a padded grid."""
    return math.prod(g // w for g, w in zip(grid, window_size, strict=True))
