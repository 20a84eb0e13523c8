"""Augmentation: one spatial transform for all frames, seeded, off in evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swiftlib.data.augment import (
    AugmentConfig,
    FrameAugment,
    _augments_in,
    build_augment,
    reseed_worker_augment,
)
from swiftlib.data.windows import WindowDataset

D, H, W, T = 20, 24, 22, 6
SPATIAL_ONLY = dict(
    enabled=True,
    affine_prob=1.0,
    elastic_prob=1.0,
    noise_prob=0.0,
    temporal_noise_prob=0.0,
    rotate_deg=20.0,
    scale=0.15,
)


def smooth_volume(seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(1, 1, 5, 6, 5, generator=g)
    return torch.nn.functional.interpolate(v, size=(D, H, W), mode="trilinear")[0, 0]  # (D, H, W)


def test_identical_frames_stay_identical():
    vol = smooth_volume()
    x = vol[None, ..., None].expand(1, D, H, W, T).contiguous()  # (1, D, H, W, T), all frames equal
    out = FrameAugment(AugmentConfig(**SPATIAL_ONLY, seed=1))(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for t in range(1, T):
        assert torch.equal(out[..., t], out[..., 0])
    assert (out - x).abs().max() > 0.1  # it did move the brain


def test_same_transform_for_different_frames():
    """Frame t+ c·frame 0 stays a linear relation after a shared spatial transform."""
    vol = smooth_volume()
    x = torch.stack([vol * (t + 1) for t in range(T)], dim=-1)[None]  # (1, D, H, W, T)
    out = FrameAugment(AugmentConfig(**SPATIAL_ONLY, seed=2))(x)
    for t in range(T):
        torch.testing.assert_close(out[..., t], out[..., 0] * (t + 1), rtol=1e-4, atol=1e-4)


def test_seeded_and_reseeded():
    x = torch.randn(1, D, H, W, T)
    cfg = AugmentConfig(
        enabled=True,
        affine_prob=1.0,
        elastic_prob=1.0,
        noise_prob=1.0,
        temporal_noise_prob=1.0,
        seed=5,
    )
    a, b = FrameAugment(cfg)(x), FrameAugment(cfg)(x)
    assert torch.equal(a, b)
    aug = FrameAugment(cfg)
    first, second = aug(x), aug(x)
    assert not torch.equal(first, second)  # a new draw per call
    aug.set_random_state(5)
    assert torch.equal(aug(x), first)
    aug.set_random_state(6)
    assert not torch.equal(aug(x), first)


def test_temporal_noise_is_one_offset_per_frame():
    x = torch.randn(1, D, H, W, T)
    cfg = AugmentConfig(
        enabled=True,
        affine_prob=0.0,
        elastic_prob=0.0,
        noise_prob=0.0,
        temporal_noise_prob=1.0,
        temporal_noise_std=0.5,
    )
    delta = FrameAugment(cfg)(x) - x  # (1, D, H, W, T)
    per_frame = delta.reshape(-1, T)  # (D*H*W, T)
    torch.testing.assert_close(per_frame, per_frame[:1].expand_as(per_frame), atol=1e-5, rtol=0)
    assert per_frame[0].std() > 0.05


def test_gaussian_noise_scales_with_strength():
    x = torch.zeros(1, D, H, W, T)
    base = dict(
        enabled=True,
        affine_prob=0.0,
        elastic_prob=0.0,
        noise_prob=1.0,
        temporal_noise_prob=0.0,
        noise_std=0.1,
    )
    s1 = FrameAugment(AugmentConfig(**base, strength=1.0))(x).std().item()
    s2 = FrameAugment(AugmentConfig(**base, strength=2.0))(x).std().item()
    assert abs(s1 - 0.1) < 0.01 and abs(s2 - 0.2) < 0.02


def test_strength_zero_and_disabled():
    x = torch.randn(1, D, H, W, T)
    assert FrameAugment(AugmentConfig(enabled=True, strength=0.0))(x) is x
    assert build_augment(None) is None
    assert build_augment(AugmentConfig()) is None  # off by default
    assert build_augment({"enabled": True, "strength": 0.0}) is None
    assert isinstance(build_augment({"enabled": True}), FrameAugment)


def test_float16_input_keeps_dtype():
    x = torch.randn(1, D, H, W, T).half()
    out = FrameAugment(AugmentConfig(**SPATIAL_ONLY))(x)
    assert out.dtype == torch.float16 and out.shape == x.shape


def test_shape_error():
    with pytest.raises(ValueError, match=r"shape \(1, D, H, W, T\); got \(2, 20, 24, 22, 6\)"):
        FrameAugment()(torch.zeros(2, D, H, W, T))


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"strength": -1.0}, "strength=-1.0"),
        ({"noise_prob": 1.5}, "noise_prob=1.5"),
        ({"rotate_deg": -2.0}, "rotate_deg=-2.0"),
        ({"elastic_sigma": (7.0, 5.0)}, "elastic_sigma"),
    ],
)
def test_config_errors(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        AugmentConfig(**kw)
    with pytest.raises(ValueError, match="unknown key"):
        AugmentConfig.from_dict({"strenght": 1.0})


def test_train_augmented_eval_bit_exact(small_store):
    store, bolds = small_store
    aug = FrameAugment(AugmentConfig(enabled=True, affine_prob=1.0, noise_prob=1.0))
    train = WindowDataset(store, ["sub-0004"], sequence_length=20, mode="train", augment=aug)
    ev = WindowDataset(store, ["sub-0004"], sequence_length=20, mode="eval")
    ref = torch.from_numpy(bolds["sub-0004"][..., :20].astype(np.float32))
    assert torch.equal(ev[0].x[0], ref)
    assert not torch.equal(train[0].x[0], ref)


def test_worker_reseeding(small_store, monkeypatch):
    store, _ = small_store
    a1, a2 = FrameAugment(), FrameAugment()
    d1 = WindowDataset(store, ["sub-0000"], sequence_length=20, augment=a1)
    d2 = WindowDataset(store, ["sub-0001"], sequence_length=20, augment=a2)
    mixed = torch.utils.data.ConcatDataset([d1, torch.utils.data.Subset(d2, [0])])
    assert {id(a) for a in _augments_in(mixed)} == {id(a1), id(a2)}
    reseed_worker_augment(0)  # main process: a no-op
    x = torch.randn(1, D, H, W, T)

    class Info:
        seed, dataset = 1234, mixed

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Info)
    reseed_worker_augment(0)
    out1 = a1(x)
    reseed_worker_augment(0)
    assert torch.equal(a1(x), out1)  # same worker seed, same stream
    Info.seed = 1235
    reseed_worker_augment(1)
    assert not torch.equal(a1(x), out1)
