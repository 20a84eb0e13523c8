"""SwiFT v1: Swin 4D fMRI Transformer (Kim et al., NeurIPS 2023), as published.

Follows the public reference implementation (Transconnectome/SwiFT,
``project/module/models/swin4d_transformer_ver7.py``, model ``swin4d_ver7``) op for op:

* input ``(B, 1, D, H, W, T)``; patch embedding = one Linear per 6×6×6×1 voxel block (time is
  never merged), no norm after it;
* 4 stages, depths 2/2/6/2, heads 3/6/12/24, channels C/2C/4C/8C; before each stage a learned
  spatial table ``(C, d, h, w)`` and a temporal table ``(C, t)`` (sliced to shorter T) are
  added;
* 4D window attention without relative position bias; odd blocks shift by window//2 on all
  axes with an additive −100 mask; windows are clipped to the grid (clipped axes get no
  shift); the grid is zero-padded (after norm1) to window multiples and padded tokens stay
  visible, as in the reference;
* spatial-only 2×2×2 patch merging (LayerNorm(8C) → Linear(8C → 2C, no bias)) at the end of
  stages 0…2;
* optionally (published: on) "full" attention in the last stage: one window covering the
  whole spatial grid × ``window_size[3]`` frames, never shifted.

Differences from the reference are in speed only: attention runs through
``F.scaled_dot_product_attention`` with the same additive mask (the explicit path is kept,
``attn.fused_attn = False``), masks are cached, and windows are attended in a layout that
needs no mask copies. ``forward_features`` returns exactly the reference ``forward`` output
``(B, 8C, D/48, H/48, W/48, T)``; the reference's unused final ``norm`` is kept (it is in the
checkpoints and in the published 4,315,212 parameters) and applied in ``forward_head``.

Load a public checkpoint: ``create_model("swift_v1_paper", checkpoint_path="swift.ckpt")``
(see :func:`checkpoint_filter_fn`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._encoder import Swin4DEncoderMixin, checkpoint_blocks
from ._registry import register_model
from .heads import ClassifierHead
from .layers import (
    AbsolutePosEmbed4D,
    DropPath,
    Mlp,
    PatchEmbed4D,
    PatchMerging3D,
    WindowAttention4D,
    init_weights,
    to_ntuple,
)

__all__ = ["SwiFTv1Config", "SwiFTv1", "SwiFTv1Block", "SwiFTv1Stage", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)


@dataclass
class SwiFTv1Config:
    """SwiFT v1 hyper-parameters; defaults are the published model (``swift_v1_paper``).

    Names follow the reference ``SwinTransformer4D`` arguments (Swin vocabulary).
    """

    img_size: tuple = (96, 96, 96, 20)  # input (D, H, W, T) the position tables are built for
    in_chans: int = 1
    embed_dim: int = 36
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (3, 6, 12, 24)
    window_size: tuple = (4, 4, 4, 4)  # stages 1… (token units)
    first_window_size: tuple = (4, 4, 4, 4)  # stage 0
    patch_size: tuple = (6, 6, 6, 1)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    c_multiplier: int = 2
    last_layer_full_msa: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    patch_norm: bool = False
    num_classes: int = 0  # 0 = no classifier (forward returns the pooled embedding)
    head_drop_rate: float = 0.0

    def grid_rule(self) -> tuple[tuple[int, ...], tuple]:
        """``(grid_multiple, required_shape)``: the spatial axes must equal ``img_size``."""
        img = to_ntuple(self.img_size, 4, "img_size")
        return (*to_ntuple(self.patch_size, 4, "patch_size")[:3], 1), (*img[:3], None)


class SwiFTv1Block(nn.Module):
    """Pre-norm (shifted) window block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``.

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
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention4D(
            dim,
            num_heads,
            window_size,
            shift_size,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            mask_padding=False,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwiFTv1Stage(nn.Module):
    """Position tables → blocks (even unshifted, odd shifted) → optional 2×2×2 merging.

    ``x: (B, D, H, W, T, C) -> (B, D/2, H/2, W/2, T, 2C)`` (or unchanged grid in the last stage).
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        pos_grid: Sequence[int],
        full_attention: bool,
        drop_path: Sequence[float],
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
    ) -> None:
        super().__init__()
        self.pos_embed = AbsolutePosEmbed4D(dim, pos_grid)
        shift = tuple(w // 2 for w in window_size)
        no_shift = (0, 0, 0, 0)
        self.blocks = nn.ModuleList(
            [
                SwiFTv1Block(
                    dim,
                    num_heads,
                    window_size,
                    no_shift if (i % 2 == 0 or full_attention) else shift,
                    mlp_ratio,
                    qkv_bias,
                    drop,
                    attn_drop,
                    drop_path[i],
                )
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging3D(dim, out_dim) if out_dim else nn.Identity()

    def forward_blocks(self, x: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
        x = self.pos_embed(x)  # (B, D, H, W, T, C)
        return checkpoint_blocks(self.blocks, x, checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


class SwiFTv1(Swin4DEncoderMixin, nn.Module):
    """SwiFT v1 encoder. ``forward_features: (B, 1, D, H, W, T) -> (B, 8C, D/48, H/48, W/48, T)``.

    Input rule: D, H, W equal to ``img_size`` (the spatial position tables are fixed) and a
    multiple of ``patch_size × 2^(stages-1)``; T at most ``img_size[3]``.
    """

    def __init__(self, cfg: SwiFTv1Config | None = None) -> None:
        super().__init__()
        cfg = cfg or SwiFTv1Config()
        self.cfg = cfg
        img_size = to_ntuple(cfg.img_size, 4, "img_size")
        patch = to_ntuple(cfg.patch_size, 4, "patch_size")
        window = to_ntuple(cfg.window_size, 4, "window_size")
        first_window = to_ntuple(cfg.first_window_size, 4, "first_window_size")
        depths, heads = tuple(cfg.depths), tuple(cfg.num_heads)
        num_stages = len(depths)
        if num_stages < 1 or len(heads) != num_stages:
            raise ValueError(
                f"depths ({len(depths)} stages) and num_heads ({len(heads)} "
                "entries) must have the same, non-zero length"
            )
        if patch[3] != 1:
            raise ValueError(
                f"SwiFT v1 never merges time: patch_size[3] must be 1, got "
                f"{patch[3]} (use a swift_v2 preset for time patching)"
            )
        dims = [cfg.embed_dim * cfg.c_multiplier**i for i in range(num_stages)]
        for i, (d, h) in enumerate(zip(dims, heads, strict=True)):
            if d % h:
                raise ValueError(
                    f"stage {i} channels ({d} = embed_dim {cfg.embed_dim} × "
                    f"{cfg.c_multiplier}^{i}) must be divisible by num_heads ({h})"
                )
        stride = tuple(p * 2 ** (num_stages - 1) for p in patch[:3])
        for axis, s, m in zip("DHW", img_size[:3], stride, strict=True):
            if s % m:
                raise ValueError(
                    f"img_size {axis} ({s}) must be divisible by patch_size × 2^(stages-1) = {m}"
                )
        if cfg.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio ({cfg.mlp_ratio}) must be > 0")

        self.num_classes = cfg.num_classes
        self.embed_dim = cfg.embed_dim
        self.num_features = dims[-1]
        self.grad_checkpointing = False
        self.img_size = img_size
        self.patch_size = patch
        self.grid_multiple = (*stride, 1)
        self.required_shape = (*img_size[:3], None)
        self.max_shape = (None, None, None, img_size[3])
        self.patch_embed = PatchEmbed4D(
            patch,
            cfg.in_chans,
            cfg.embed_dim,
            norm_layer=nn.LayerNorm if cfg.patch_norm else None,
            grid_multiple=self.grid_multiple,
            required_shape=self.required_shape,
            max_shape=self.max_shape,
            model_name="swift_v1",
        )
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        grid = [s // p for s, p in zip(img_size, patch, strict=True)]
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        self.feature_info = []
        for i in range(num_stages):
            last = i == num_stages - 1
            full = last and cfg.last_layer_full_msa
            stage_window = first_window if i == 0 else window
            if full:  # one window over the whole (configured) spatial grid × window_size[3]
                stage_window = (*grid[:3], window[3])
            self.stages.append(
                SwiFTv1Stage(
                    dims[i],
                    None if last else dims[i] * cfg.c_multiplier,
                    depths[i],
                    heads[i],
                    stage_window,
                    grid,
                    full,
                    dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    cfg.mlp_ratio,
                    cfg.qkv_bias,
                    cfg.drop_rate,
                    cfg.attn_drop_rate,
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
        for stage in self.stages:
            stage.pos_embed.reset_parameters()


# --------------------------------------------------------------------------------------
# Checkpoint compatibility with the public SwiFT v1 code
# --------------------------------------------------------------------------------------

_V1_RENAMES = [
    (r"^patch_embed\.fc\.", "patch_embed.proj."),
    (r"^patch_embed\.norm\.", "patch_embed.norm."),
    (r"^pos_embeds\.(\d+)\.(pos_embed|time_embed)$", r"stages.\1.pos_embed.\2"),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.linear1\.", r"stages.\1.blocks.\2.mlp.fc1."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.linear2\.", r"stages.\1.blocks.\2.mlp.fc2."),
    (
        r"^layers\.(\d+)\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj)\.",
        r"stages.\1.blocks.\2.\3.",
    ),
    (r"^layers\.(\d+)\.downsample\.(norm|reduction)\.", r"stages.\1.downsample.\2."),
    (r"^norm\.", "norm."),
]


def checkpoint_filter_fn(state_dict: dict, model: SwiFTv1 | None = None) -> dict:
    """Map a SwiFT v1 checkpoint to :class:`SwiFTv1` parameter names.

    Accepts a Lightning checkpoint (``{"state_dict": {"model.<name>": tensor, ...}, ...}``),
    its ``state_dict``, or an un-prefixed reference ``state_dict``. Reference names
    (``patch_embed.fc``, ``pos_embeds.i.{pos_embed,time_embed}``,
    ``layers.i.blocks.j.{norm1,attn.qkv,attn.proj,norm2,mlp.linear1,mlp.linear2}``,
    ``layers.i.downsample.{norm,reduction}``, ``norm``) become ours; everything else (the
    Lightning ``output_head.*``, optimiser state, …) is dropped. Loaded and dropped counts are
    logged; with ``model`` given, shape mismatches raise with the key and both shapes.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    has_prefix = any(k.startswith("model.") for k in state_dict)
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            dropped.append(key)
            continue
        name = key
        if has_prefix:
            if not key.startswith("model."):
                dropped.append(key)
                continue
            name = key[len("model.") :]
        for pattern, repl in _V1_RENAMES:
            new, n = re.subn(pattern, repl, name)
            if n:
                out[new] = value
                break
        else:
            dropped.append(key)
    if model is not None:
        own = model.state_dict()
        for name, value in out.items():
            if name in own and own[name].shape != value.shape:
                raise ValueError(
                    f"checkpoint tensor {name!r} has shape {tuple(value.shape)} but the model "
                    f"expects {tuple(own[name].shape)}: build the model with the checkpoint's "
                    "hyper-parameters (img_size, embed_dim, depths, …)"
                )
    _logger.info(
        "SwiFT v1 checkpoint: %d tensors mapped, %d entries not loaded%s",
        len(out),
        len(dropped),
        f" (e.g. {dropped[:3]})" if dropped else "",
    )
    return out


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------

register_model(
    "swift_v1_paper",
    SwiFTv1,
    SwiFTv1Config(),
    "SwiFT v1 as published: embed 36, 96³×20 input, 4,315,212 parameters",
)
register_model(
    "swift_v1_test",
    SwiFTv1,
    SwiFTv1Config(
        img_size=(8, 12, 16, 6),
        embed_dim=12,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=(2, 2, 2, 4),
        first_window_size=(2, 2, 2, 4),
        patch_size=(2, 2, 2, 1),
    ),
    "tiny SwiFT v1 for tests (8×12×16×6 input)",
)
