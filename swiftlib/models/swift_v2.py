"""SwiFT v2: the scaled Swin 4D family (joint or factorised 4D window attention).

Builds on SwiFT v1 (same tensor layout, stages, spatial-only patch merging, last-stage full
spatial attention) with what large models need:

* **time patching** (default 6×6×6×2 voxel blocks) so long scans cost fewer tokens;
* attention through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels
  on GPU), shift masks cached per (grid, window, shift) and padded tokens masked as keys;
* **LayerScale** on every residual branch, **stochastic depth** (linearly increasing),
  **activation checkpointing** per block (``set_grad_checkpointing()``), bf16-safe
  (masks follow the activation dtype; LayerNorm / softmax run in the autocast dtype policy);
* learned absolute position tables per stage (as v1) that are **interpolated** to other
  grids, so any input meeting ``grid_multiple`` works;
* a **factorised** variant (``attention="factorized"``): each block does temporal 1-D window
  attention with rotary encoding over T, then spatial 3-D window attention with axial rotary
  encoding over (D, H, W), then the MLP, each with LayerScale (no absolute tables);
* an optional **µP** switch (``mup=True``; Yang et al. 2022, "Tensor Programs V", Table 3 for
  Adam): attention logits scaled by 1/head_dim instead of 1/√head_dim, a zero-initialised
  classifier, and every weight whose fan-in grows with the width (hidden and output matrices)
  initialised with std ``0.02 × √(base fan-in / fan-in)`` and trained with Adam learning rate
  ``lr × base fan-in / fan-in`` (``swiftlib.models.mup``: :func:`mup_width_multipliers`,
  :func:`mup_param_groups`).
  Which dimensions grow is found as the ``mup`` library does: by comparing each parameter's
  shape with the same model built at ``embed_dim = mup_base_width`` (on the meta device). At
  the base width µP and the standard parametrisation coincide except for the attention scale.

Presets are named by parameter count (``swift_v2_51m`` …), counted on the ``meta`` device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ._encoder import Swin4DEncoderMixin, checkpoint_blocks
from ._registry import register_model
from .heads import ClassifierHead
from .layers import (
    AbsolutePosEmbed4D,
    DropPath,
    LayerScale,
    Mlp,
    PatchEmbed4D,
    PatchMerging3D,
    WindowAttention4D,
    init_weights,
    to_ntuple,
)
from .mup import mup_param_groups, mup_rescale_init, mup_width_multipliers

__all__ = [
    "SwiFTv2Config",
    "SwiFTv2",
    "SwiFTv2Block",
    "SwiFTv2FactorizedBlock",
    "SwiFTv2Stage",
    "mup_param_groups",
    "mup_base_shapes",
    "mup_width_multipliers",
    "mup_rescale_init",
]

#: Window extent meaning "the whole axis" (clipped to the grid at run time).
FULL = 1 << 20

ATTENTION_KINDS = ("joint", "factorized")
POS_EMBED_KINDS = ("absolute", "none")


@dataclass
class SwiFTv2Config:
    """SwiFT v2 hyper-parameters; defaults are the ~51M model (``swift_v2_51m``)."""

    # grid the position tables are built for (interpolated otherwise)
    img_size: tuple = (96, 96, 96, 20)
    in_chans: int = 1
    embed_dim: int = 96
    depths: tuple = (2, 2, 18, 2)
    num_heads: tuple = (6, 12, 24, 48)
    window_size: tuple = (4, 4, 4, 5)  # token units; T' = 20/2 = 10 frames → 2 windows, no padding
    patch_size: tuple = (6, 6, 6, 2)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    c_multiplier: int = 2
    last_stage_full_attention: bool = True
    attention: str = "joint"  # "joint" | "factorized"
    pos_embed: str = "absolute"  # "absolute" | "none"
    rope_theta: float = 10000.0
    layer_scale_init: float = 1e-5  # 0 disables LayerScale
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    num_classes: int = 0
    head_drop_rate: float = 0.0
    grad_checkpointing: bool = False
    mup: bool = False
    mup_base_width: int = 36  # embed_dim at which µP learning rates equal the base LR

    def grid_rule(self) -> tuple[tuple[int, ...], tuple]:
        """``(grid_multiple, required_shape)``: D, H, W divisible by patch × 2^(stages-1),
        T divisible by the time patch."""
        patch = to_ntuple(self.patch_size, 4, "patch_size")
        stride = tuple(p * 2 ** (len(self.depths) - 1) for p in patch[:3])
        return (*stride, patch[3]), (None, None, None, None)


class SwiFTv2Block(nn.Module):
    """Joint 4D (shifted) window block with LayerScale and stochastic depth.

    ``x: (B, D, H, W, T, C) -> (B, D, H, W, T, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-5,
    ) -> None:
        super().__init__()
        ls = (lambda: LayerScale(dim, layer_scale_init)) if layer_scale_init > 0 else nn.Identity
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention4D(
            dim,
            num_heads,
            window_size,
            shift_size,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            mask_padding=True,
        )
        self.ls1 = ls()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = ls()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class SwiFTv2FactorizedBlock(nn.Module):
    """Factorised block: temporal 1-D window attention (RoPE over T) → spatial 3-D window
    attention (axial RoPE over D, H, W) → MLP; each residual with LayerScale / drop path.

    ``x: (B, D, H, W, T, C) -> (B, D, H, W, T, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-5,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        wd, wh, ww, wt = window_size
        sd, sh, sw, st = shift_size
        ls = (lambda: LayerScale(dim, layer_scale_init)) if layer_scale_init > 0 else nn.Identity
        dp = (lambda: DropPath(drop_path)) if drop_path > 0 else nn.Identity
        self.norm_t = nn.LayerNorm(dim)
        self.attn_t = WindowAttention4D(
            dim,
            num_heads,
            (1, 1, 1, wt),
            (0, 0, 0, st),
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            mask_padding=True,
            rope_axes=(3,),
            rope_theta=rope_theta,
        )
        self.ls_t = ls()
        self.drop_path_t = dp()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention4D(
            dim,
            num_heads,
            (wd, wh, ww, 1),
            (sd, sh, sw, 0),
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            mask_padding=True,
            rope_axes=(0, 1, 2),
            rope_theta=rope_theta,
        )
        self.ls1 = ls()
        self.drop_path1 = dp()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = ls()
        self.drop_path2 = dp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path_t(self.ls_t(self.attn_t(self.norm_t(x))))
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class SwiFTv2Stage(nn.Module):
    """(Position tables) → blocks (odd ones shifted) → optional 2×2×2 spatial merging.

    ``x: (B, D, H, W, T, C) -> (B, D/2, H/2, W/2, T, 2C)`` (grid unchanged in the last stage).
    """

    def __init__(
        self,
        cfg: SwiFTv2Config,
        dim: int,
        out_dim: int | None,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        pos_grid: Sequence[int],
        full_attention: bool,
        drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.pos_embed = (
            AbsolutePosEmbed4D(dim, pos_grid, interpolate=True)
            if cfg.pos_embed == "absolute"
            else nn.Identity()
        )
        if full_attention:
            window_size = (FULL, FULL, FULL, window_size[3])
            shift = (0, 0, 0, window_size[3] // 2)
        else:
            shift = tuple(w // 2 for w in window_size)
        blocks = []
        for i in range(depth):
            block_shift = (0, 0, 0, 0) if i % 2 == 0 else shift
            kwargs = dict(
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias,
                drop=cfg.drop_rate,
                attn_drop=cfg.attn_drop_rate,
                drop_path=drop_path[i],
                layer_scale_init=cfg.layer_scale_init,
            )
            if cfg.attention == "factorized":
                blocks.append(
                    SwiFTv2FactorizedBlock(
                        dim,
                        num_heads,
                        window_size,
                        block_shift,
                        rope_theta=cfg.rope_theta,
                        **kwargs,
                    )
                )
            else:
                blocks.append(SwiFTv2Block(dim, num_heads, window_size, block_shift, **kwargs))
        self.blocks = nn.ModuleList(blocks)
        self.downsample = PatchMerging3D(dim, out_dim) if out_dim else nn.Identity()

    def forward_blocks(self, x: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
        x = self.pos_embed(x)  # (B, D, H, W, T, C)
        return checkpoint_blocks(self.blocks, x, checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


class SwiFTv2(Swin4DEncoderMixin, nn.Module):
    """SwiFT v2 encoder.

    ``forward_features: (B, C_in, D, H, W, T) -> (B, C·2^(S-1), D/(p·2^(S-1)), …, T/p_t)``.
    Input rule: D, H, W divisible by ``patch_size × 2^(stages-1)`` (48 for 6-voxel patches
    and 4 stages), T divisible by the time patch (``model.grid_multiple``).
    """

    def __init__(self, cfg: SwiFTv2Config | None = None) -> None:
        super().__init__()
        cfg = cfg or SwiFTv2Config()
        self.cfg = cfg
        img_size = to_ntuple(cfg.img_size, 4, "img_size")
        patch = to_ntuple(cfg.patch_size, 4, "patch_size")
        window = to_ntuple(cfg.window_size, 4, "window_size")
        depths, heads = tuple(cfg.depths), tuple(cfg.num_heads)
        num_stages = len(depths)
        if cfg.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {cfg.attention!r}")
        if cfg.pos_embed not in POS_EMBED_KINDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}, got {cfg.pos_embed!r}")
        if num_stages < 1 or len(heads) != num_stages:
            raise ValueError(
                f"depths ({len(depths)} stages) and num_heads ({len(heads)} "
                "entries) must have the same, non-zero length"
            )
        dims = [cfg.embed_dim * cfg.c_multiplier**i for i in range(num_stages)]
        for i, (d, h) in enumerate(zip(dims, heads, strict=True)):
            if d % h:
                raise ValueError(
                    f"stage {i} channels ({d} = embed_dim {cfg.embed_dim} × "
                    f"{cfg.c_multiplier}^{i}) must be divisible by num_heads ({h})"
                )
            if cfg.attention == "factorized" and (d // h) % 2:
                raise ValueError(
                    f"factorized attention uses rotary encoding, which needs an even "
                    f"head_dim; stage {i} has {d} / {h} = {d // h}"
                )
        if any(w < 1 for w in window):
            raise ValueError(f"window_size {window} must be ≥ 1 on every axis")
        if not 0.0 <= cfg.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate ({cfg.drop_path_rate}) must be in [0, 1)")
        if cfg.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio ({cfg.mlp_ratio}) must be > 0")
        grid_multiple, required = cfg.grid_rule()
        for axis, s, m in zip("DHWT", img_size, grid_multiple, strict=True):
            if s % m:
                raise ValueError(
                    f"img_size {axis} ({s}) must be divisible by {m} "
                    "(patch_size × 2^(stages-1) spatially, the time patch on T)"
                )

        self.num_classes = cfg.num_classes
        self.embed_dim = cfg.embed_dim
        self.num_features = dims[-1]
        self.grad_checkpointing = cfg.grad_checkpointing
        self.img_size = img_size
        self.patch_size = patch
        self.grid_multiple = tuple(grid_multiple)
        self.required_shape = tuple(required)
        self.max_shape = (None, None, None, None)
        self.patch_embed = PatchEmbed4D(
            patch,
            cfg.in_chans,
            cfg.embed_dim,
            grid_multiple=self.grid_multiple,
            model_name="swift_v2",
        )
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        grid = [s // p for s, p in zip(img_size, patch, strict=True)]
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        self.feature_info = []
        for i in range(num_stages):
            last = i == num_stages - 1
            self.stages.append(
                SwiFTv2Stage(
                    cfg,
                    dims[i],
                    None if last else dims[i] * cfg.c_multiplier,
                    depths[i],
                    heads[i],
                    window,
                    grid,
                    last and cfg.last_stage_full_attention,
                    dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                )
            )
            reduction = tuple(p * 2**i for p in patch[:3]) + (patch[3],)
            self.feature_info.append(
                {"num_chs": dims[i], "reduction": reduction, "module": f"stages.{i}"}
            )
            grid = [g // 2 for g in grid[:3]] + [grid[3]]
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, cfg.num_classes, cfg.head_drop_rate)
        self.apply(init_weights)
        for m in self.modules():
            if isinstance(m, (AbsolutePosEmbed4D, LayerScale)):
                m.reset_parameters()
        if cfg.mup:
            self._apply_mup()

    def _apply_mup(self) -> None:
        """µP: 1/head_dim attention scale (SDPA ``scale``), width-scaled init of the weights whose
        fan-in grows with the width (std × √(base fan-in / fan-in)), zero readout."""
        for m in self.modules():
            if isinstance(m, WindowAttention4D):
                m.scale = 1.0 / m.head_dim
        mup_rescale_init(self, self.mup_base_shapes())
        if isinstance(self.head.fc, nn.Linear):
            nn.init.zeros_(self.head.fc.weight)

    def mup_base_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape in this model built at the µP base width."""
        return mup_base_shapes(self.cfg)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if self.cfg.mup and isinstance(self.head.fc, nn.Linear):
            nn.init.zeros_(self.head.fc.weight)


def mup_base_shapes(cfg: SwiFTv2Config) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the model ``cfg`` describes, built at ``embed_dim =
    cfg.mup_base_width`` (same depths, heads, windows) on the meta device."""
    base = replace(cfg, embed_dim=cfg.mup_base_width, mup=False, grad_checkpointing=False)
    try:
        with torch.device("meta"):
            model = SwiFTv2(base)
    except ValueError as err:
        raise ValueError(
            f"mup_base_width ({cfg.mup_base_width}) gives no valid base model for µP with "
            f"num_heads {tuple(cfg.num_heads)}: {err}; choose a base width every stage's "
            "channel count of which the heads divide"
        ) from err
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


# --------------------------------------------------------------------------------------
# Presets (parameter counts from the meta device; see docs/models.md)
# --------------------------------------------------------------------------------------


def _preset(description: str, **fields) -> tuple[SwiFTv2Config, str]:
    return SwiFTv2Config(**fields), description


_PRESETS = {
    "swift_v2_test": _preset(
        "tiny joint SwiFT v2 for tests (12×16×20×6 input)",
        img_size=(12, 16, 20, 6),
        embed_dim=12,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=(2, 2, 2, 2),
        patch_size=(2, 2, 2, 2),
        drop_path_rate=0.1,
    ),
    "swift_v2_factorized_test": _preset(
        "tiny factorised SwiFT v2 for tests",
        img_size=(12, 16, 20, 6),
        embed_dim=16,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=(2, 2, 2, 2),
        patch_size=(2, 2, 2, 2),
        attention="factorized",
        pos_embed="none",
        drop_path_rate=0.1,
    ),
    "swift_v2_5m": _preset(
        "~5M joint: embed 36, depths 2/2/9/2",
        embed_dim=36,
        depths=(2, 2, 9, 2),
        num_heads=(3, 6, 12, 24),
        drop_path_rate=0.05,
    ),
    "swift_v2_51m": _preset("~51M joint: embed 96, depths 2/2/18/2"),
    "swift_v2_202m": _preset(
        "~202M joint: embed 192, depths 2/2/18/2", embed_dim=192, drop_path_rate=0.2
    ),
    "swift_v2_806m": _preset(
        "~806M joint: embed 384, depths 2/2/18/2", embed_dim=384, drop_path_rate=0.3
    ),
    "swift_v2_837m": _preset(
        "~837M factorised: embed 384, depths 2/2/12/2",
        embed_dim=384,
        depths=(2, 2, 12, 2),
        attention="factorized",
        pos_embed="none",
        drop_path_rate=0.3,
    ),
    "swift_v2_3b": _preset(
        "~3.2B joint: embed 768, depths 2/2/18/2",
        embed_dim=768,
        num_heads=(12, 24, 48, 96),
        drop_path_rate=0.4,
    ),
    "swift_v2_factorized_51m": _preset(
        "~51M factorised: embed 96, depths 2/2/12/2",
        depths=(2, 2, 12, 2),
        attention="factorized",
        pos_embed="none",
    ),
    "swift_v2_factorized_202m": _preset(
        "~202M factorised: embed 192, depths 2/2/12/2",
        embed_dim=192,
        depths=(2, 2, 12, 2),
        attention="factorized",
        pos_embed="none",
        drop_path_rate=0.2,
    ),
}

#: Nominal sizes the presets are named for (tests check ±5 %).
NOMINAL_PARAMS = {
    "swift_v2_5m": 5e6,
    "swift_v2_51m": 51e6,
    "swift_v2_202m": 202e6,
    "swift_v2_806m": 806e6,
    "swift_v2_837m": 837e6,
    "swift_v2_3b": 3.2e9,
    "swift_v2_factorized_51m": 51e6,
    "swift_v2_factorized_202m": 202e6,
}

for _name, (_cfg, _desc) in _PRESETS.items():
    register_model(_name, SwiFTv2, _cfg, _desc)
