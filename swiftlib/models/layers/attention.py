"""4D (shifted) window multi-head self-attention on token grids ``(B, D, H, W, T, C)``.

One module does the whole Swin step: clip the window to the grid, zero-pad to a window
multiple, roll by ``-shift`` and partition into windows ``(B*nW, N, C)`` (one cached gather,
identical to ``torch.roll`` + partition), attend, reverse (the inverse gather) and crop.
Attention runs through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels
on GPU, fused kernel on CPU) with the cached additive mask; the
explicit ``softmax(q·kᵀ·scale + mask)·v`` path (SwiFT v1's math) is kept behind
``fused_attn = False`` for checks.

Windows with a mask are attended in window-major layout ``(nW, B*heads, N, hd)`` so the
cached ``(nW, 1, N, N)`` mask broadcasts over batch and heads without copies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .helpers import to_ntuple
from .rope import apply_rope, rope_tables
from .window import (
    clip_window,
    compute_attn_mask,
    permute_tokens,
    window_gather_index,
    window_padding,
)

__all__ = ["WindowAttention4D"]


class WindowAttention4D(nn.Module):
    """Shifted-window MSA over a 4D token grid.

    Args:
        dim: channels C.
        num_heads: heads; ``dim`` must be divisible by it.
        window_size: ``(Wd, Wh, Ww, Wt)``; clipped to the grid at run time. Use 1 on an axis
            for attention that does not mix that axis (factorised blocks).
        shift_size: ``(Sd, Sh, Sw, St)``; 0 = no shift on that axis.
        qkv_bias: bias on the qkv projection.
        attn_drop, proj_drop: dropout on attention weights / output.
        mask_padding: mask zero-padded tokens as keys (SwiFT v2). ``False`` keeps SwiFT v1,
            where padded tokens take part in attention.
        rope_axes: axes (0=D, 1=H, 2=W, 3=T) rotated by RoPE on q and k; ``None`` = no RoPE.
        rope_theta: RoPE base.
        mask_value: additive mask value between regions (``-100`` as published).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int] = (4, 4, 4, 4),
        shift_size: Sequence[int] = (0, 0, 0, 0),
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mask_padding: bool = False,
        rope_axes: Sequence[int] | None = None,
        rope_theta: float = 10000.0,
        mask_value: float = -100.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.window_size = to_ntuple(window_size, 4, "window_size")
        self.shift_size = to_ntuple(shift_size, 4, "shift_size")
        for axis, (w, s) in enumerate(zip(self.window_size, self.shift_size, strict=True)):
            if w < 1 or not 0 <= s < w:
                raise ValueError(
                    f"window_size {self.window_size} must be ≥ 1 and shift_size "
                    f"{self.shift_size} in [0, window) on every axis (axis {axis})"
                )
        self.mask_padding = mask_padding
        self.rope_axes = tuple(rope_axes) if rope_axes is not None else None
        if self.rope_axes is not None and self.head_dim % 2:
            raise ValueError(
                f"rotary encoding needs an even head_dim, got {self.head_dim} "
                f"(dim {dim} / num_heads {num_heads})"
            )
        self.rope_theta = rope_theta
        self.mask_value = mask_value
        self.fused_attn = True
        self.pad_head_dim = True
        self.attn_drop_p = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
            f"shift_size={self.shift_size}, rope_axes={self.rope_axes}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D, H, W, T, C) -> (B, D, H, W, T, C)."""
        B, D, H, W, T, C = x.shape
        window, shift = clip_window((D, H, W, T), self.window_size, self.shift_size)
        pad = window_padding((D, H, W, T), window)
        if any(pad):
            x = F.pad(
                x, (0, 0, 0, pad[3], 0, pad[2], 0, pad[1], 0, pad[0])
            )  # (B, Dp, Hp, Wp, Tp, C)
        grid = (D + pad[0], H + pad[1], W + pad[2], T + pad[3])
        L, N = math.prod(grid), math.prod(window)
        mask = compute_attn_mask(
            grid,
            window,
            shift,
            x.device,
            x.dtype,
            valid_grid=(D, H, W, T) if self.mask_padding else None,
            mask_value=self.mask_value,
        )
        # roll by -shift + window partition as one cached gather (and its inverse after)
        idx, inv = window_gather_index(grid, window, shift, x.device)
        windows = permute_tokens(x.reshape(B, L, C), idx, inv)  # (B, nW*N, C)
        windows = self.attend(windows.view(B * (L // N), N, C), B, mask, window)  # (B*nW, N, C)
        x = permute_tokens(windows.view(B, L, C), inv, idx)  # (B, L, C) grid order
        x = x.view(B, *grid, C)  # (B, Dp, Hp, Wp, Tp, C)
        if any(pad):
            x = x[:, :D, :H, :W, :T].contiguous()  # (B, D, H, W, T, C)
        return x

    def _align(self, t: torch.Tensor) -> int:
        """Zero channels that bring head_dim to the fused kernels' fast multiple (16 on CPU,
        8 for CUDA flash), 0 when padding is off or not needed."""
        if not (self.fused_attn and self.pad_head_dim):
            return 0
        return (-self.head_dim) % (16 if t.device.type == "cpu" else 8)

    def _weight_pad(self, windows: torch.Tensor) -> int | None:
        """Zero channels per head added through the qkv/proj weights (CPU, no RoPE), or
        ``None`` where q, k, v come from the ``qkv`` module call.

        RoPE rotates the true head_dim, so it pads q, k, v after the rotation instead; off
        the CPU the projections stay module calls (DeepSpeed ZeRO-3 gathers a module's
        parameters in its forward hook, which a bare ``F.linear`` on ``.weight`` bypasses).
        """
        if self.rope_axes is not None or windows.device.type != "cpu" or not self.fused_attn:
            return None
        return self._align(windows)

    def _copy_pad(self, q: torch.Tensor) -> int:
        return self._align(q)

    def attend(
        self,
        windows: torch.Tensor,
        batch_size: int,
        mask: torch.Tensor | None,
        window: Sequence[int],
    ) -> torch.Tensor:
        """Multi-head attention inside windows.

        Args:
            windows: ``(B*nW, N, C)``, batch-major window order.
            batch_size: B.
            mask: additive ``(nW, N, N)`` or ``None``.
            window: clipped window (for the RoPE tables).

        Returns:
            ``(B*nW, N, C)``.
        """
        BnW, N, C = windows.shape
        B, h, hd = batch_size, self.num_heads, self.head_dim
        nW = BnW // B
        pad = self._weight_pad(windows)  # None: plain module calls
        hp = hd + (pad or 0)  # head_dim as attended (zero channels appended per head)
        if pad is not None:
            # CPU: q, k, v from three GEMMs whose outputs SDPA reads in place (its gradients
            # come back in the same layout, so the backward needs no stack + permute copy),
            # with head_dim zero-padded through zero weight rows (and proj reading the padded
            # heads through zero columns): no pad copies, no slice copy, the same numbers.
            w = F.pad(self.qkv.weight.view(3, h, hd, C), (0, 0, 0, pad)).view(3, h * hp, C)
            b = self.qkv.bias
            if b is not None:
                b = F.pad(b.view(3, h, hd), (0, pad)).view(3, h * hp)
            q, k, v = (
                F.linear(windows, w[i], None if b is None else b[i]) for i in range(3)
            )  # each (B*nW, N, h*hp)
            if mask is None:
                q, k, v = (
                    t.view(BnW, N, h, hp).transpose(1, 2) for t in (q, k, v)
                )  # (B*nW, h, N, hp)
            else:
                q, k, v = (
                    t.view(B, nW, N, h, hp).permute(1, 0, 3, 2, 4).reshape(nW, B * h, N, hp)
                    for t in (q, k, v)
                )  # (nW, B*h, N, hp)
                mask = mask.unsqueeze(1)  # (nW, 1, N, N)
        else:
            qkv = self.qkv(windows)  # (B*nW, N, 3C)
            if mask is None:
                qkv = qkv.view(BnW, N, 3, h, hd).permute(2, 0, 3, 1, 4)  # (3, B*nW, h, N, hd)
            else:
                qkv = qkv.view(B, nW, N, 3, h, hd).permute(3, 1, 0, 4, 2, 5)
                qkv = qkv.reshape(3, nW, B * h, N, hd)  # (3, nW, B*h, N, hd)
                mask = mask.unsqueeze(1)  # (nW, 1, N, N)
            q, k, v = qkv.unbind(0)
        if self.rope_axes is not None:
            cos, sin = rope_tables(window, hd, self.rope_axes, self.rope_theta, q.device, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.fused_attn:
            if mask is not None and mask.dtype != q.dtype:
                mask = mask.to(q.dtype)
            # Fused kernels are faster at head_dim multiples of 16 (CPU) / 8 (CUDA flash):
            # zero-padding q, k, v leaves q·k and the first hd output channels unchanged.
            copy_pad = self._copy_pad(q) if pad is None else 0
            if copy_pad:
                q, k, v = (F.pad(t, (0, copy_pad)) for t in (q, k, v))
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.attn_drop_p if self.training else 0.0,
                scale=self.scale,
            )
            if copy_pad:
                out = out[..., :hd]
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (..., N, N)
            if mask is not None:
                attn = attn + mask.to(attn.dtype)
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = attn @ v  # (..., N, hd)
        if mask is None:
            out = out.transpose(1, 2).reshape(BnW, N, h * hp)  # (B*nW, N, h*hp)
        else:
            out = out.view(nW, B, h, N, hp).permute(1, 0, 3, 2, 4)  # (B, nW, N, h, hp)
            out = out.reshape(BnW, N, h * hp)  # (B*nW, N, h*hp)
        if pad is not None:
            w = F.pad(self.proj.weight.view(C, h, hd), (0, pad)).view(C, h * hp)
            return self.proj_drop(F.linear(out, w, self.proj.bias))  # (B*nW, N, C)
        return self.proj_drop(self.proj(out))
