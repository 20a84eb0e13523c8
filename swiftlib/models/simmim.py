"""SimMIM masked-image-modelling pre-training for the Swin4D encoders (Xie et al., CVPR 2022).

* :class:`MaskGenerator` masks blocks of patch tokens (``mask_patch`` tokens per block, e.g.
  2×2×2×1) at ``mask_ratio`` ∈ [0.2, 0.8] with one of three strategies — ``random`` (blocks
  drawn independently over space and time), ``tube`` (one spatial mask repeated over all
  frames) or ``block`` (contiguous spatio-temporal boxes) — from a seeded generator.
* A learned mask token replaces the masked tokens right after ``encoder.patch_embed``; the
  encoder then runs on all tokens (``encoder.forward_tokens``), so position tables are added
  to mask tokens too.
* A light linear decoder maps the last stage back to voxels: temporal expansion by the time
  patch first, then spatial pixel-shuffles (×2 per patch-merging, mirroring the encoder
  widths, then × the patch size).
* The loss (L1 by default, L2 or smooth-L1) is averaged over masked voxels only, optionally
  only brain voxels (a given ``brain_mask`` or, with ``brain_only=True``, voxels that are
  non-zero at some time point).

``SimMIM.forward(x)`` returns :class:`SimMIMOutput` ``(loss, reconstruction, mask)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import create_model, get_model_config, register_model
from .layers import format_grid, init_weights, to_ntuple

__all__ = [
    "MaskGenerator",
    "SimMIMConfig",
    "SimMIM",
    "SimMIMDecoder",
    "SimMIMOutput",
    "MASK_STRATEGIES",
    "LOSSES",
]

MASK_STRATEGIES = ("random", "tube", "block")
LOSSES = ("l1", "l2", "smooth_l1")
MASK_RATIO_RANGE = (0.2, 0.8)


class MaskGenerator:
    """Random token masks in blocks of ``mask_patch`` tokens.

    Args:
        mask_ratio: fraction of mask blocks masked, in [0.2, 0.8] (exact per sample, rounded).
        mask_patch: block size in tokens ``(d, h, w, t)``.
        strategy: ``"random"``, ``"tube"`` or ``"block"``.
        seed: seed of a private ``torch.Generator`` (same seed → same mask sequence);
            ``None`` draws from the global torch RNG.

    ``gen(batch_size, token_grid)`` → bool ``(B, D', H', W', T')``, True = masked.
    """

    def __init__(
        self,
        mask_ratio: float = 0.5,
        mask_patch: Sequence[int] = (2, 2, 2, 1),
        strategy: str = "random",
        seed: int | None = None,
    ) -> None:
        lo, hi = MASK_RATIO_RANGE
        if not lo <= mask_ratio <= hi:
            raise ValueError(f"mask_ratio ({mask_ratio}) must be in [{lo}, {hi}]")
        if strategy not in MASK_STRATEGIES:
            raise ValueError(f"mask strategy must be one of {MASK_STRATEGIES}, got {strategy!r}")
        self.mask_patch = to_ntuple(mask_patch, 4, "mask_patch")
        if any(int(p) < 1 for p in self.mask_patch):
            raise ValueError(f"mask_patch {self.mask_patch} must be ≥ 1 on every axis")
        self.mask_ratio = mask_ratio
        self.strategy = strategy
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __repr__(self) -> str:
        return (
            f"MaskGenerator(mask_ratio={self.mask_ratio}, mask_patch={self.mask_patch}, "
            f"strategy={self.strategy!r}, seed={self.seed})"
        )

    def _randperm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator)

    def _randint(self, low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=self.generator))

    def _block_mask(self, grid: tuple[int, ...], k: int) -> torch.Tensor:
        """Contiguous boxes (each axis up to half the grid) until ≥ k cells, then trim to k."""
        mask = torch.zeros(grid, dtype=torch.bool)
        for _ in range(10_000):
            if int(mask.sum()) >= k:
                break
            size = [self._randint(1, max(1, g // 2) + 1) for g in grid]
            start = [self._randint(0, g - s + 1) for g, s in zip(grid, size, strict=True)]
            mask[tuple(slice(o, o + s) for o, s in zip(start, size, strict=True))] = True
        flat = mask.flatten()
        masked = flat.nonzero().squeeze(1)
        if masked.numel() > k:  # trim random cells so the ratio is exact
            drop = masked[self._randperm(masked.numel())[: masked.numel() - k]]
            flat[drop] = False
        elif masked.numel() < k:  # pragma: no cover - only if the loop ran out
            free = (~flat).nonzero().squeeze(1)
            flat[free[self._randperm(free.numel())[: k - masked.numel()]]] = True
        return flat.view(grid)

    def __call__(
        self, batch_size: int, token_grid: Sequence[int], device: torch.device | str | None = None
    ) -> torch.Tensor:
        token_grid = tuple(int(g) for g in token_grid)
        bad = [a for a, g, p in zip("DHWT", token_grid, self.mask_patch, strict=True) if g % p]
        if bad:
            raise ValueError(
                f"token grid {format_grid(token_grid)} is not divisible by mask_patch "
                f"{format_grid(self.mask_patch)} on axes {', '.join(bad)}"
            )
        # mask-block grid
        grid = tuple(g // p for g, p in zip(token_grid, self.mask_patch, strict=True))
        masks = []
        for _ in range(batch_size):
            if self.strategy == "tube":
                n = math.prod(grid[:3])
                k = round(self.mask_ratio * n)
                m = torch.zeros(n, dtype=torch.bool)
                m[self._randperm(n)[:k]] = True
                m = m.view(*grid[:3], 1).expand(grid)  # (d, h, w, t) same over time
            elif self.strategy == "block":
                m = self._block_mask(grid, round(self.mask_ratio * math.prod(grid)))
            else:
                n = math.prod(grid)
                k = round(self.mask_ratio * n)
                m = torch.zeros(n, dtype=torch.bool)
                m[self._randperm(n)[:k]] = True
                m = m.view(grid)
            masks.append(m)
        mask = torch.stack(masks)  # (B, d, h, w, t) in mask blocks
        for axis, p in enumerate(self.mask_patch, start=1):
            mask = mask.repeat_interleave(p, dim=axis)  # -> (B, D', H', W', T') tokens
        return mask.to(device) if device is not None else mask


def _pixel_shuffle_3d(x: torch.Tensor, r: Sequence[int]) -> torch.Tensor:
    """(B, D, H, W, T, r0·r1·r2·C) -> (B, D·r0, H·r1, W·r2, T, C)."""
    B, D, H, W, T, C = x.shape
    r0, r1, r2 = r
    c = C // (r0 * r1 * r2)
    x = x.view(B, D, H, W, T, r0, r1, r2, c)  # (B, D, H, W, T, r0, r1, r2, c)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4, 8)  # (B, D, r0, H, r1, W, r2, T, c)
    return x.reshape(B, D * r0, H * r1, W * r2, T, c)  # (B, D·r0, H·r1, W·r2, T, c)


class SimMIMDecoder(nn.Module):
    """Light linear decoder: temporal expansion, then spatial pixel-shuffles to voxels.

    ``(B, D_L, H_L, W_L, T', C_L)`` tokens → ``(B, in_chans, D, H, W, T)`` with
    ``T = T'·p_t`` and ``D = D_L · 2^(S-1) · p_d`` (etc.).

    Args:
        dims: encoder stage widths ``[C_0, …, C_L]``.
        patch_size: encoder patch ``(p_d, p_h, p_w, p_t)``.
        in_chans: channels to reconstruct.
    """

    def __init__(self, dims: Sequence[int], patch_size: Sequence[int], in_chans: int = 1) -> None:
        super().__init__()
        self.patch_size = to_ntuple(patch_size, 4, "patch_size")
        self.in_chans = in_chans
        c_last = dims[-1]
        pt = self.patch_size[3]
        self.temporal = nn.Linear(c_last, pt * c_last) if pt > 1 else nn.Identity()
        self.upsample = nn.ModuleList(
            nn.Linear(c_in, 8 * c_out)
            for c_in, c_out in zip(dims[::-1][:-1], dims[::-1][1:], strict=True)
        )
        self.to_voxels = nn.Linear(dims[0], math.prod(self.patch_size[:3]) * in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, D, H, W, T, C = x.shape
        pt = self.patch_size[3]
        if pt > 1:
            x = self.temporal(x).view(B, D, H, W, T, pt, C)  # (B, D, H, W, T', pt, C)
            x = x.reshape(B, D, H, W, T * pt, C)  # (B, D, H, W, T, C)
        for up in self.upsample:
            x = _pixel_shuffle_3d(up(x), (2, 2, 2))  # (B, 2D, 2H, 2W, T, C/2)
        x = _pixel_shuffle_3d(self.to_voxels(x), self.patch_size[:3])  # (B, D, H, W, T, C_in)
        return x.permute(0, 5, 1, 2, 3, 4).contiguous()  # (B, C_in, D, H, W, T)


class SimMIMOutput(NamedTuple):
    """``loss`` (scalar), ``reconstruction`` ``(B, C, D, H, W, T)``, ``mask`` bool
    ``(B, 1, D, H, W, T)`` (True = masked voxel), ``token_mask`` ``(B, D', H', W', T')``."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    mask: torch.Tensor
    token_mask: torch.Tensor


@dataclass
class SimMIMConfig:
    """SimMIM pre-training around a registered encoder preset."""

    encoder: str = "swift_v2_51m"
    encoder_overrides: dict = field(default_factory=dict)
    mask_ratio: float = 0.5
    mask_patch: tuple = (2, 2, 2, 1)  # tokens per mask block (d, h, w, t)
    mask_strategy: str = "random"  # "random" | "tube" | "block"
    loss: str = "l1"  # "l1" | "l2" | "smooth_l1"
    smooth_l1_beta: float = 1.0
    brain_only: bool = False  # with no brain_mask given: count only voxels non-zero at some t
    seed: int | None = None

    def grid_rule(self) -> tuple[tuple[int, ...], tuple]:
        enc_cfg = get_model_config(self.encoder, **self.encoder_overrides)
        multiple, required = enc_cfg.grid_rule()
        patch = to_ntuple(enc_cfg.patch_size, 4, "patch_size")
        mask_patch = to_ntuple(self.mask_patch, 4, "mask_patch")
        multiple = tuple(
            math.lcm(m, p * q) for m, p, q in zip(multiple, patch, mask_patch, strict=True)
        )
        return multiple, required


class SimMIM(nn.Module):
    """Masked-voxel reconstruction around a Swin4D encoder.

    ``forward(x, mask=None, brain_mask=None) -> SimMIMOutput``:

    * ``x``: ``(B, C, D, H, W, T)``;
    * ``mask``: optional token mask ``(B, D', H', W', T')`` (bool, True = masked); drawn from
      :attr:`mask_generator` when ``None``;
    * ``brain_mask``: optional bool ``(B or 1, 1, D, H, W)`` or ``(B or 1, 1, D, H, W, T)``;
      the loss then counts masked brain voxels only.
    """

    def __init__(self, cfg: SimMIMConfig | None = None, encoder: nn.Module | None = None) -> None:
        super().__init__()
        cfg = cfg or SimMIMConfig()
        if cfg.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
        self.cfg = cfg
        self.encoder = (
            encoder if encoder is not None else create_model(cfg.encoder, **cfg.encoder_overrides)
        )
        for attr in ("patch_embed", "forward_tokens", "feature_info"):
            if not hasattr(self.encoder, attr):
                raise TypeError(
                    f"SimMIM needs an encoder with `{attr}` (a swiftlib Swin4D "
                    f"encoder), got {type(self.encoder).__name__}"
                )
        self.mask_generator = MaskGenerator(
            cfg.mask_ratio, cfg.mask_patch, cfg.mask_strategy, cfg.seed
        )
        self.in_chans = self.encoder.patch_embed.in_chans
        self.patch_size = self.encoder.patch_embed.patch_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, 1, 1, self.encoder.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        dims = [f["num_chs"] for f in self.encoder.feature_info]
        self.decoder = SimMIMDecoder(dims, self.patch_size, self.in_chans)
        self.decoder.apply(init_weights)
        if getattr(getattr(self.encoder, "cfg", None), "mup", False):
            from .mup import mup_rescale_init

            # the decoder reads the encoder's widths out: µP init relative to the base width
            shapes = self.mup_base_shapes()
            mup_rescale_init(
                self.decoder, {k[8:]: v for k, v in shapes.items() if k[:8] == "decoder."}
            )
        enc_multiple = tuple(self.encoder.grid_multiple)
        self.grid_multiple = tuple(
            math.lcm(m, p * q)
            for m, p, q in zip(
                enc_multiple, self.patch_size, self.mask_generator.mask_patch, strict=True
            )
        )
        self.required_shape = tuple(self.encoder.required_shape)

    def mup_base_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape at the encoder's µP base width (encoder, mask token and a
        decoder built for the base widths on the meta device)."""
        if not hasattr(self.encoder, "mup_base_shapes"):
            raise TypeError(
                f"µP needs a SwiFT v2 encoder (mup=True); {type(self.encoder).__name__} has no "
                "µP base shapes"
            )
        enc = self.encoder
        base_width = enc.cfg.mup_base_width
        dims = [f["num_chs"] * base_width // enc.embed_dim for f in enc.feature_info]
        with torch.device("meta"):
            decoder = SimMIMDecoder(dims, self.patch_size, self.in_chans)
        shapes = {f"encoder.{k}": v for k, v in enc.mup_base_shapes().items()}
        shapes["mask_token"] = (*self.mask_token.shape[:-1], base_width)
        shapes.update({f"decoder.{k}": tuple(p.shape) for k, p in decoder.named_parameters()})
        return shapes

    # -- interface delegated to the encoder (names prefixed) -----------------------------
    def no_weight_decay(self) -> set[str]:
        return (
            {"mask_token"}
            | {f"encoder.{n}" for n in self.encoder.no_weight_decay()}
            | {f"decoder.{n}" for n, p in self.decoder.named_parameters() if p.ndim <= 1}
        )

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        enc = self.encoder.group_matcher(coarse)

        def pre(p: str) -> str:
            return "|".join("^encoder\\." + alt.lstrip("^") for alt in p.split("|"))

        blocks = enc["blocks"]
        blocks = pre(blocks) if isinstance(blocks, str) else [(pre(p), s) for p, s in blocks]
        return {"stem": pre(enc["stem"]) + "|^mask_token", "blocks": blocks}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    # -- masking and loss ----------------------------------------------------------------
    def voxel_mask(self, token_mask: torch.Tensor) -> torch.Tensor:
        """Token mask ``(B, D', H', W', T')`` → voxel mask ``(B, 1, D, H, W, T)``."""
        B, D, H, W, T = token_mask.shape
        pd, ph, pw, pt = self.patch_size
        m = token_mask[:, :, None, :, None, :, None, :, None]  # (B, D', 1, H', 1, W', 1, T', 1)
        m = m.expand(B, D, pd, H, ph, W, pw, T, pt)  # (B, D', pd, H', ph, W', pw, T', pt)
        return m.reshape(B, 1, D * pd, H * ph, W * pw, T * pt)  # (B, 1, D, H, W, T)

    def reconstruction_loss(
        self,
        reconstruction: torch.Tensor,
        target: torch.Tensor,
        voxel_mask: torch.Tensor,
        brain_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss over masked (brain) voxels and channels; unmasked voxels have no effect.

        ``reconstruction, target: (B, C, D, H, W, T)``; ``voxel_mask: (B, 1, D, H, W, T)``.
        """
        if reconstruction.shape != target.shape:
            raise ValueError(
                f"reconstruction {tuple(reconstruction.shape)} and target "
                f"{tuple(target.shape)} shapes differ"
            )
        weight = voxel_mask
        if brain_mask is not None:
            if brain_mask.ndim == 5:
                brain_mask = brain_mask[..., None]  # (B, 1, D, H, W, 1)
            if brain_mask.ndim != 6 or tuple(brain_mask.shape[2:5]) != tuple(target.shape[2:5]):
                raise ValueError(
                    f"brain_mask must be (B or 1, 1, D, H, W[, T]) matching the input grid "
                    f"{format_grid(target.shape[2:5])}, got {tuple(brain_mask.shape)}"
                )
            weight = weight & brain_mask.bool()
        weight = weight.to(reconstruction.dtype)
        pred, tgt = reconstruction.float(), target.float()
        if self.cfg.loss == "l1":
            per_voxel = (pred - tgt).abs()
        elif self.cfg.loss == "l2":
            per_voxel = (pred - tgt) ** 2
        else:
            per_voxel = F.smooth_l1_loss(pred, tgt, reduction="none", beta=self.cfg.smooth_l1_beta)
        weight = weight.float().expand_as(per_voxel)
        # torch.where keeps non-finite predictions at unmasked voxels out of the loss.
        total = torch.where(weight > 0, per_voxel * weight, torch.zeros_like(per_voxel)).sum()
        return total / weight.sum().clamp(min=1.0)

    # -- forward -------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        brain_mask: torch.Tensor | None = None,
    ) -> SimMIMOutput:
        tokens = self.encoder.patch_embed(x)  # (B, D', H', W', T', C)
        B, D, H, W, T, C = tokens.shape
        if mask is None:
            mask = self.mask_generator(B, (D, H, W, T), device=x.device)
        elif tuple(mask.shape) != (B, D, H, W, T):
            raise ValueError(
                f"mask has shape {tuple(mask.shape)}, expected the token grid "
                f"{(B, D, H, W, T)} (B, D', H', W', T')"
            )
        mask = mask.bool()
        w = mask[..., None].to(tokens.dtype)  # (B, D', H', W', T', 1)
        tokens = tokens * (1.0 - w) + self.mask_token.to(tokens.dtype) * w
        feats = self.encoder.forward_tokens(tokens)  # (B, C_L, D_L, H_L, W_L, T')
        recon = self.decoder(feats.permute(0, 2, 3, 4, 5, 1))  # (B, C_in, D, H, W, T)
        voxel_mask = self.voxel_mask(mask)  # (B, 1, D, H, W, T)
        if brain_mask is None and self.cfg.brain_only:
            brain_mask = (x != 0).any(dim=-1).any(dim=1, keepdim=True)  # (B, 1, D, H, W)
        loss = self.reconstruction_loss(recon, x, voxel_mask, brain_mask)
        return SimMIMOutput(loss, recon, voxel_mask, mask)


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------

for _enc in (
    "swift_v1_test",
    "swift_v2_test",
    "swift_v2_factorized_test",
    "swift_v1_paper",
    "swift_v2_5m",
    "swift_v2_51m",
    "swift_v2_202m",
):
    register_model(
        f"simmim_{_enc}", SimMIM, SimMIMConfig(encoder=_enc), f"SimMIM pre-training of {_enc}"
    )
