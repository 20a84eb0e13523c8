"""Pure ``nn.Module`` models (encoders, SimMIM, heads). Imports need torch and numpy only.

Build everything through the registry::

    from swiftlib.models import create_model, list_models
    list_models("swift_v2_*")
    encoder = create_model("swift_v1_paper")                  # SwiFT v1 as published
    mim = create_model("simmim_swift_v2_51m", mask_ratio=0.6)  # SimMIM pre-training

Tensor layout (DESIGN §2): volumes ``(B, C, D, H, W, T)``, tokens ``(B, D, H, W, T, C)``,
windows ``(B*nW, Wd*Wh*Ww*Wt, C)``. See ``docs/models.md``.
"""

from . import heads, layers, mup, simmim, swift_v1, swift_v2
from ._encoder import fit_padding, group_parameters
from ._registry import create_model, get_model_config, list_models, load_checkpoint, register_model
from .heads import (
    ClassifierHead,
    NTXentLoss,
    ProjectionHead,
    RegressionHead,
    nt_xent_loss,
    pooled_embedding,
)
from .simmim import MaskGenerator, SimMIM, SimMIMConfig, SimMIMOutput
from .swift_v1 import SwiFTv1, SwiFTv1Config
from .swift_v2 import SwiFTv2, SwiFTv2Config

__all__ = [
    "ClassifierHead",
    "MaskGenerator",
    "NTXentLoss",
    "ProjectionHead",
    "RegressionHead",
    "SimMIM",
    "SimMIMConfig",
    "SimMIMOutput",
    "SwiFTv1",
    "SwiFTv1Config",
    "SwiFTv2",
    "SwiFTv2Config",
    "create_model",
    "fit_padding",
    "get_model_config",
    "group_parameters",
    "heads",
    "layers",
    "list_models",
    "mup",
    "load_checkpoint",
    "nt_xent_loss",
    "pooled_embedding",
    "register_model",
    "simmim",
    "swift_v1",
    "swift_v2",
]
