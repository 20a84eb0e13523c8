"""SwiFT v2: preset sizes (meta device), shapes, SDPA vs explicit, mask caching, variants."""

from __future__ import annotations

import pytest
import torch

from swiftlib.models import create_model, list_models
from swiftlib.models.layers import compute_attn_mask, param_count
from swiftlib.models.swift_v2 import NOMINAL_PARAMS, mup_param_groups

from .conftest import input_for


@pytest.mark.parametrize("name", sorted(NOMINAL_PARAMS))
def test_preset_parameter_counts_within_5_percent(name):
    with torch.device("meta"):
        model = create_model(name)
    count = param_count(model)
    assert abs(count / NOMINAL_PARAMS[name] - 1) <= 0.05, f"{name}: {count:,}"


def test_every_size_preset_has_a_nominal_count():
    sized = [n for n in list_models("swift_v2_*") if not n.endswith("_test")]
    assert sorted(sized) == sorted(NOMINAL_PARAMS)


def test_51m_output_shape_on_meta():
    with torch.device("meta"):
        model = create_model("swift_v2_51m")
        out = model.forward_features(torch.empty(1, 1, 96, 96, 96, 20))
    assert out.shape == (1, 768, 2, 2, 2, 10)
    assert model.grid_multiple == (48, 48, 48, 2)


@pytest.mark.parametrize("name", ["swift_v2_test", "swift_v2_factorized_test"])
def test_shapes_distinct_axes_and_other_grids(name):
    model = create_model(name).eval()
    C = model.num_features
    assert model.forward_features(input_for(model)).shape == (2, C, 3, 4, 5, 3)
    # another grid meeting the rule: tables interpolated (joint) / RoPE (factorised)
    out = model.forward_features(input_for(model, D=8, H=20, W=12, T=10))
    assert out.shape == (2, C, 2, 5, 3, 5)
    with pytest.raises(
        ValueError, match=r"T divisible by 2.*Pad by \(D, H, W, T\) = \(0, 0, 0, 1\)"
    ):
        model(input_for(model, T=5))


@pytest.mark.parametrize("name", ["swift_v2_test", "swift_v2_factorized_test"])
def test_sdpa_equals_explicit_whole_model(name):
    model = create_model(name, layer_scale_init=1.0).eval()
    x = input_for(model, T=10)  # 5 token frames: padded windows and shifts
    with torch.no_grad():
        fused = model.forward_features(x)
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        explicit = model.forward_features(x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


def test_shift_masks_built_once_across_forwards():
    model = create_model("swift_v2_test").eval()
    x = input_for(model)
    compute_attn_mask.cache_clear()
    with torch.no_grad():
        model(x)
        builds = compute_attn_mask.build_cache_info().misses
        tensors = compute_attn_mask.cache_info().misses
        for _ in range(3):
            model(x)
    assert compute_attn_mask.build_cache_info().misses == builds
    assert compute_attn_mask.cache_info().misses == tensors
    assert compute_attn_mask.cache_info().hits >= 3 * tensors


def test_grad_checkpointing_same_gradients():
    model = create_model("swift_v2_test", drop_path_rate=0.0).train()
    x = input_for(model)
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    for a, p in zip(ref, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_finite():
    model = create_model("swift_v2_test", layer_scale_init=1.0).eval()
    x = input_for(model)
    with torch.no_grad():
        ref = model.forward_features(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.forward_features(x)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_layer_scale_and_stochastic_depth_present():
    model = create_model("swift_v2_test")
    blk = model.stages[1].blocks[1]
    assert torch.allclose(blk.ls1.gamma, torch.full_like(blk.ls1.gamma, 1e-5))
    assert blk.drop_path2.drop_prob == pytest.approx(0.1)
    assert "stages.0.blocks.0.ls1.gamma" in model.no_weight_decay()
    no_ls = create_model("swift_v2_test", layer_scale_init=0.0)
    assert isinstance(no_ls.stages[0].blocks[0].ls1, torch.nn.Identity)


def test_factorized_block_structure():
    model = create_model("swift_v2_factorized_test")
    blk = model.stages[0].blocks[1]
    assert blk.attn_t.window_size == (1, 1, 1, 2) and blk.attn_t.shift_size == (0, 0, 0, 1)
    assert blk.attn_t.rope_axes == (3,)
    assert blk.attn.window_size == (2, 2, 2, 1) and blk.attn.shift_size == (1, 1, 1, 0)
    assert blk.attn.rope_axes == (0, 1, 2)
    assert not any("pos_embed" in n for n, _ in model.named_parameters())


def test_mup_switch():
    model = create_model("swift_v2_test", mup=True, num_classes=2, mup_base_width=6)
    attn = model.stages[0].blocks[0].attn
    assert attn.scale == pytest.approx(1 / attn.head_dim)
    assert torch.count_nonzero(model.head.fc.weight) == 0
    groups = mup_param_groups(model, lr=1e-3)
    lrs = sorted({g["lr"] for g in groups})
    assert lrs == pytest.approx([1e-3 / 2, 1e-3])  # embed 12 = 2 × base width 6
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    model.reset_classifier(4)
    assert torch.count_nonzero(model.head.fc.weight) == 0


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"attention": "axial"},
            r"attention must be one of \('joint', 'factorized'\), got 'axial'",
        ),
        ({"pos_embed": "sincos"}, r"pos_embed must be one of \('absolute', 'none'\), got 'sincos'"),
        ({"num_heads": (2, 4, 8)}, r"depths \(2 stages\) and num_heads \(3 entries\)"),
        (
            {"num_heads": (5, 4)},
            r"stage 0 channels \(12 = embed_dim 12 × 2\^0\) must be divisible by num_heads \(5\)",
        ),
        (
            {"attention": "factorized", "num_heads": (4, 8)},
            r"even head_dim; stage 0 has 12 / 4 = 3",
        ),
        ({"window_size": (2, 0, 2, 2)}, r"window_size \(2, 0, 2, 2\) must be ≥ 1"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate \(1.0\) must be in \[0, 1\)"),
        ({"mlp_ratio": -1.0}, r"mlp_ratio \(-1.0\) must be > 0"),
        ({"img_size": (12, 16, 20, 5)}, r"img_size T \(5\) must be divisible by 2"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model("swift_v2_test", **overrides)
