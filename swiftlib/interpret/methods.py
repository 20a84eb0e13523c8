"""Attribution methods on one batch of windows, through captum.

Integrated Gradients (``"ig"``), IG with SmoothGrad² (``"ig_smoothgrad_sq"``), plain
gradients (``"saliency"``), SmoothGrad (``"smoothgrad"``: |gradient| averaged over noisy
copies, Smilkov et al. 2017), gradient × input (``"grad_x_input"``) and occlusion
(``"occlusion"``). Each window gives a map shaped like the input, ``(D, H, W, T)``.
"""

from __future__ import annotations

import torch

from swiftlib.interpret.config import METHODS, AttributionConfig
from swiftlib.interpret.inference import InferenceModel, autocast_context

__all__ = ["METHODS", "make_baseline", "attribute_windows"]


def make_baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    """The IG / occlusion reference input for ``x (B, 1, D, H, W, T)``.

    ``"background"``: every voxel at the window's background value (the store's
    out-of-brain constant, read at the corner voxel) — "no brain signal at all";
    ``"temporal_mean"``: each voxel's mean over the window — "no fluctuation", which
    isolates the dynamics from the static anatomy; a number: that constant.
    """
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "background":
        # (B, 1, 1, 1, 1, 1) -> (B, 1, D, H, W, T)
        return x[:, :, :1, :1, :1, :1].expand_as(x).clone()
    if baseline == "temporal_mean":
        # (B, 1, D, H, W, 1) -> (B, 1, D, H, W, T)
        return x.mean(dim=-1, keepdim=True).expand_as(x).clone()
    raise ValueError(f"baseline={baseline!r}: expected 'background', 'temporal_mean' or a number")


def attribute_windows(
    model: InferenceModel,
    x: torch.Tensor,
    target,
    config: AttributionConfig | None = None,
    **options,
) -> torch.Tensor:
    """Attributions of one batch: ``x (B, 1, D, H, W, T)`` → ``(B, D, H, W, T)`` float32.

    Args:
        model: a fine-tuning checkpoint's :class:`~swiftlib.interpret.inference.InferenceModel`.
        x: the windows, on the model's device.
        target: an int class (classification), 0 (regression), or a ``(B,)`` tensor of them.
        config: an :class:`~swiftlib.interpret.config.AttributionConfig`; this function
            uses ``method, baseline, n_steps, internal_batch_size, nt_samples,
            noise_level, occlusion_window, precision``.
        **options: fields of the config, replacing its values (``method="saliency"``).
    """
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    cfg = AttributionConfig.resolve(config, options, caller="attribute_windows()")
    device = x.device

    def forward(inp):
        with autocast_context(cfg.precision, device):
            return model.forward(inp).float()  # (B, num_outputs)

    x = x.detach().float()
    ig = dict(target=target, n_steps=cfg.n_steps, internal_batch_size=cfg.internal_batch_size)

    def noise():  # SmoothGrad: sigma is a fraction of the batch's value range
        return dict(
            nt_samples=cfg.nt_samples,
            nt_samples_batch_size=1,
            stdevs=float(cfg.noise_level * (x.amax() - x.amin())),
        )

    if cfg.method == "ig":
        out = IntegratedGradients(forward).attribute(
            x, baselines=make_baseline(x, cfg.baseline), **ig
        )
    elif cfg.method == "ig_smoothgrad_sq":
        out = NoiseTunnel(IntegratedGradients(forward)).attribute(
            x, nt_type="smoothgrad_sq", baselines=make_baseline(x, cfg.baseline), **noise(), **ig
        )
    elif cfg.method == "saliency":
        out = Saliency(forward).attribute(x, target=target, abs=True)
    elif cfg.method == "smoothgrad":
        out = NoiseTunnel(Saliency(forward)).attribute(
            x, nt_type="smoothgrad", target=target, abs=True, **noise()
        )
    elif cfg.method == "grad_x_input":
        out = InputXGradient(forward).attribute(x, target=target)
    else:  # occlusion: (d, h, w) blocks over all frames of the window
        T = x.shape[-1]
        shape = (1, *cfg.occlusion_window, T)
        out = Occlusion(forward).attribute(
            x,
            sliding_window_shapes=shape,
            strides=shape,
            baselines=make_baseline(x, cfg.baseline),
            target=target,
            perturbations_per_eval=cfg.internal_batch_size or 1,
        )
    return out.detach().float()[:, 0]  # (B, 1, D, H, W, T) -> (B, D, H, W, T)
