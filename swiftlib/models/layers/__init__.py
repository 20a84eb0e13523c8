"""Shared model blocks, one topic per file (timm ``layers`` style)."""

from .attention import WindowAttention4D
from .drop import DropPath, LayerScale, drop_path
from .helpers import (
    AXES,
    check_input_grid,
    format_grid,
    grid_padding,
    init_weights,
    param_count,
    to_ntuple,
)
from .mlp import Mlp
from .patch import PatchEmbed4D, PatchMerging3D
from .pos_embed import AbsolutePosEmbed4D
from .rope import apply_rope, rope_tables
from .window import clip_window, compute_attn_mask, window_padding, window_partition, window_reverse

__all__ = [
    "AXES",
    "AbsolutePosEmbed4D",
    "DropPath",
    "LayerScale",
    "Mlp",
    "PatchEmbed4D",
    "PatchMerging3D",
    "WindowAttention4D",
    "apply_rope",
    "check_input_grid",
    "clip_window",
    "compute_attn_mask",
    "drop_path",
    "format_grid",
    "grid_padding",
    "init_weights",
    "param_count",
    "rope_tables",
    "to_ntuple",
    "window_padding",
    "window_partition",
    "window_reverse",
]
