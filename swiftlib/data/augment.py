"""Training-time augmentation of fMRI windows, identical in space for every frame.

A window ``x: (1, D, H, W, T)`` is one brain seen ``T`` times, so a spatial augmentation must
move every frame the same way — otherwise the model sees the head jump between frames.
The spatial transforms (MONAI ``RandAffine``: rotation + scale; ``Rand3DElastic``) treat
time as channels: ``(1, D, H, W, T) → (T, D, H, W)``, transform, and back; a MONAI transform
draws one set of parameters per call and applies it to all channels. Intensity noise is
then added: voxel-wise Gaussian noise and *temporal noise* (one random offset per frame,
like a fluctuating global signal).

Off by default (``AugmentConfig.enabled = False``) and never applied in evaluation
(``WindowDataset`` refuses an ``augment`` in eval mode). ``strength`` scales every
magnitude: 0 is the identity, 1 the defaults below, 2 twice as strong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from swiftlib.utils.config import config_from_dict

__all__ = ["AugmentConfig", "FrameAugment", "build_augment", "reseed_worker_augment"]


@dataclass
class AugmentConfig:
    """Augmentation settings; magnitudes are at ``strength = 1``.

    Attributes:
        enabled: apply augmentation to training windows.
        strength: multiplies rotation, scale, elastic magnitude and noise levels.
        rotate_deg: maximum rotation about each axis (degrees).
        scale: maximum relative zoom (0.1 = ±10 %).
        elastic_sigma: smoothing of the elastic displacement field (voxels, min/max).
        elastic_magnitude: maximum elastic displacement magnitude (voxels).
        noise_std: voxel-wise Gaussian noise std (data are z-scored, so in units of SD).
        temporal_noise_std: std of the per-frame global offset.
        affine_prob, elastic_prob, noise_prob, temporal_noise_prob: chance of each transform.
        seed: random seed (DataLoader workers re-seed from it and the worker seed).
    """

    enabled: bool = False
    strength: float = 1.0
    rotate_deg: float = 10.0
    scale: float = 0.1
    elastic_sigma: tuple[float, float] = (5.0, 7.0)
    elastic_magnitude: float = 2.0
    noise_std: float = 0.05
    temporal_noise_std: float = 0.05
    affine_prob: float = 0.5
    elastic_prob: float = 0.25
    noise_prob: float = 0.5
    temporal_noise_prob: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.strength < 0:
            raise ValueError(
                f"AugmentConfig.strength={self.strength}: expected >= 0 (0 = no augmentation)"
            )
        for name in ("affine_prob", "elastic_prob", "noise_prob", "temporal_noise_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"AugmentConfig.{name}={p}: expected a probability in [0, 1]")
        for name in ("rotate_deg", "scale", "elastic_magnitude", "noise_std", "temporal_noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name}={getattr(self, name)}: expected >= 0")
        lo, hi = self.elastic_sigma
        if not 0 < lo <= hi:
            raise ValueError(
                f"AugmentConfig.elastic_sigma={self.elastic_sigma}: expected 0 < min <= max"
            )

    @classmethod
    def from_dict(cls, d) -> AugmentConfig:
        return config_from_dict(cls, d)


class FrameAugment:
    """Augment a window ``x: (1, D, H, W, T)``; the spatial part is shared by all frames.

    Seeded: ``FrameAugment(cfg)`` starts from ``cfg.seed``; :meth:`set_random_state`
    re-seeds (MONAI convention), which DataLoader workers do with
    :func:`reseed_worker_augment` so workers draw different augmentations.
    """

    def __init__(self, config: AugmentConfig | None = None):
        from monai.transforms import Rand3DElastic, RandAffine

        self.config = cfg = config or AugmentConfig(enabled=True)
        k = cfg.strength
        rot = math.radians(cfg.rotate_deg * k)
        self.affine = RandAffine(
            prob=cfg.affine_prob,
            rotate_range=(rot, rot, rot),
            scale_range=(cfg.scale * k,) * 3,
            mode="bilinear",
            padding_mode="border",
        )
        self.elastic = Rand3DElastic(
            sigma_range=cfg.elastic_sigma,
            magnitude_range=(0.0, cfg.elastic_magnitude * k),
            prob=cfg.elastic_prob,
            mode="bilinear",
            padding_mode="border",
        )
        self.set_random_state(cfg.seed)

    def set_random_state(self, seed: int | None = None) -> FrameAugment:
        """Re-seed this transform and its MONAI sub-transforms from one seed."""
        self.R = np.random.RandomState(None if seed is None else int(seed) % (2**32))
        sub = self.R.randint(0, 2**31 - 1, size=2)
        self.affine.set_random_state(seed=int(sub[0]))
        self.elastic.set_random_state(seed=int(sub[1]))
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[0] != 1:
            raise ValueError(
                f"FrameAugment expects one window x of shape (1, D, H, W, T); got {tuple(x.shape)}"
            )
        cfg, k = self.config, self.config.strength
        if k == 0:
            return x
        dtype = x.dtype
        _, D, H, W, T = x.shape
        vol = x[0].permute(3, 0, 1, 2).float()  # (1, D, H, W, T) -> (T, D, H, W): time as channels
        if cfg.affine_prob > 0 and (cfg.rotate_deg > 0 or cfg.scale > 0):
            vol = _plain(self.affine(vol))  # (T, D, H, W), one affine for all frames
        if cfg.elastic_prob > 0 and cfg.elastic_magnitude > 0:
            vol = _plain(self.elastic(vol))  # (T, D, H, W), one deformation for all frames
        g = torch.Generator().manual_seed(int(self.R.randint(0, 2**31 - 1)))
        if cfg.noise_std > 0 and self.R.rand() < cfg.noise_prob:
            vol = vol + torch.randn(vol.shape, generator=g) * (cfg.noise_std * k)  # (T, D, H, W)
        if cfg.temporal_noise_std > 0 and self.R.rand() < cfg.temporal_noise_prob:
            # per-frame offset
            vol = vol + torch.randn(T, 1, 1, 1, generator=g) * (cfg.temporal_noise_std * k)
        return (
            vol.permute(1, 2, 3, 0).unsqueeze(0).to(dtype).contiguous()
        )  # (T, D, H, W) -> (1, D, H, W, T)


def _plain(t) -> torch.Tensor:
    """A MONAI MetaTensor (or array) as a plain float tensor."""
    if hasattr(t, "as_tensor"):
        t = t.as_tensor()
    return torch.as_tensor(t)


def build_augment(config: AugmentConfig | dict | None) -> FrameAugment | None:
    """``FrameAugment`` for an enabled config, else None (no augmentation)."""
    if config is None:
        return None
    if isinstance(config, dict):
        config = AugmentConfig.from_dict(config)
    if not config.enabled or config.strength == 0:
        return None
    return FrameAugment(config)


def _augments_in(dataset):
    """Every ``augment`` object reachable from a dataset (ConcatDataset / Subset aware)."""
    seen = []
    stack = [dataset]
    while stack:
        d = stack.pop()
        aug = getattr(d, "augment", None)
        if aug is not None and hasattr(aug, "set_random_state"):
            seen.append(aug)
        stack.extend(getattr(d, "datasets", []) or [])
        if hasattr(d, "dataset"):
            stack.append(d.dataset)
    return seen


def reseed_worker_augment(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker (and epoch) its own augmentation stream.

    The worker's torch seed is ``base_seed + worker_id`` where the DataLoader draws
    ``base_seed`` from its (seedable) generator every epoch, so runs stay reproducible.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    seed = info.seed % (2**32)
    np.random.seed(seed)
    for i, aug in enumerate(_augments_in(info.dataset)):
        aug.set_random_state((seed + 7919 * i) % (2**32))
