"""SwiFT v1: published shapes and counts, interface, validation, checkpoint loading."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from swiftlib.models import create_model, group_parameters, pooled_embedding
from swiftlib.models.layers import param_count
from swiftlib.models.swift_v1 import checkpoint_filter_fn

from .conftest import input_for

# ---------------------------------------------------------------------------- published


def test_paper_preset_counts_and_output_shape_on_meta():
    with torch.device("meta"):
        model = create_model("swift_v1_paper")
        out = model.forward_features(torch.empty(1, 1, 96, 96, 96, 20))
    assert param_count(model) == 4_315_212
    assert out.shape == (1, 288, 2, 2, 2, 20)
    assert model.num_features == 288
    assert model.grid_multiple == (48, 48, 48, 1)
    # last stage: one spatial window (2×2×2) × 4 frames, never shifted
    last = model.stages[-1].blocks
    assert all(
        b.attn.window_size == (2, 2, 2, 4) and b.attn.shift_size == (0, 0, 0, 0) for b in last
    )
    assert model.stages[0].blocks[1].attn.shift_size == (2, 2, 2, 2)


def test_test_preset_shapes_distinct_axes():
    model = create_model("swift_v1_test").eval()
    x = input_for(model)  # (2, 1, 8, 12, 16, 6)
    feats = model.forward_features(x)
    assert feats.shape == (2, 24, 2, 3, 4, 6)
    assert model(x).shape == (2, 24)  # num_classes=0 → embedding
    short = model.forward_features(input_for(model, T=5))
    assert short.shape == (2, 24, 2, 3, 4, 5)


def test_fused_equals_explicit_whole_model():
    model = create_model("swift_v1_test").eval()
    x = input_for(model, T=5)  # T=5 exercises zero padding with visible padded tokens
    with torch.no_grad():
        fused = model.forward_features(x)
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        explicit = model.forward_features(x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_input_errors():
    model = create_model("swift_v1_test")
    with pytest.raises(
        ValueError,
        match=r"swift_v1 cannot take a 8×12×8×6.*W = 16.*Pad by \(D, H, W, T\) = \(0, 0, 8, 0\)",
    ):
        model(torch.zeros(1, 1, 8, 12, 8, 6))
    with pytest.raises(ValueError, match="exceed the size of the position tables"):
        model(torch.zeros(1, 1, 8, 12, 16, 7))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"patch_size": (2, 2, 2, 2)}, r"never merges time: patch_size\[3\] must be 1, got 2"),
        ({"num_heads": (2,)}, r"depths \(2 stages\) and num_heads \(1 entries\)"),
        (
            {"num_heads": (5, 4)},
            r"stage 0 channels \(12 = embed_dim 12 × 2\^0\) must be divisible by num_heads \(5\)",
        ),
        (
            {"img_size": (8, 12, 18, 6)},
            r"img_size W \(18\) must be divisible by patch_size × 2\^\(stages-1\) = 4",
        ),
        ({"mlp_ratio": 0.0}, r"mlp_ratio \(0.0\) must be > 0"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model("swift_v1_test", **overrides)


# ---------------------------------------------------------------------------- interface


def test_forward_intermediates():
    model = create_model("swift_v1_test").eval()
    x = input_for(model)
    final, inter = model.forward_intermediates(x)
    assert [t.shape for t in inter] == [(2, 12, 4, 6, 8, 6), (2, 24, 2, 3, 4, 6)]
    torch.testing.assert_close(final, model.forward_features(x))
    assert len(model.forward_intermediates(x, indices=1, intermediates_only=True)) == 1
    assert model.forward_intermediates(x, indices=[-1], intermediates_only=True)[0].shape[1] == 24
    with pytest.raises(ValueError, match=r"indices \(3\) must be in \[1, 2\]"):
        model.forward_intermediates(x, indices=3)
    with pytest.raises(ValueError, match="stage index 2 out of range for 2 stages"):
        model.forward_intermediates(x, indices=[2])


def test_embeddings_and_classifier():
    model = create_model("swift_v1_test", num_classes=3).eval()
    x = input_for(model)
    assert model(x).shape == (2, 3)
    emb = model.forward_head(model.forward_features(x), pre_logits=True)
    assert emb.shape == (2, model.num_features)
    torch.testing.assert_close(pooled_embedding(model, x), emb)
    assert pooled_embedding(model, x, per_stage=True).shape == (2, 12 + 24)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, 24)


def test_no_weight_decay_and_group_matcher():
    model = create_model("swift_v1_test", num_classes=2)
    nwd = model.no_weight_decay()
    assert "stages.0.pos_embed.pos_embed" in nwd and "stages.1.pos_embed.time_embed" in nwd
    assert "norm.weight" in nwd and "stages.0.blocks.0.attn.qkv.bias" in nwd
    assert "stages.0.blocks.0.attn.qkv.weight" not in nwd
    names = [n for n, _ in model.named_parameters()]
    matcher = model.group_matcher()
    for n in names:
        if n.startswith("head"):
            continue
        hit = re.match(matcher["stem"], n) or any(re.match(p, n) for p, _ in matcher["blocks"])
        assert hit, n
    groups = group_parameters(model)
    assert groups[0] == ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    assert groups[-1] == ["head.fc.weight", "head.fc.bias"]
    assert sum(len(g) for g in groups) == len(names)
    coarse = group_parameters(model, coarse=True)
    assert len(coarse) == 1 + 2 + 1  # stem, 2 stages, head(+ unmatched norm)


def test_grad_checkpointing_same_gradients():
    model = create_model("swift_v1_test").train()
    x = input_for(model)
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(ref, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- checkpoints


def _reference_state_dict(model) -> dict:
    """A state_dict with the public SwiFT v1 module names (``swin4d_transformer_ver7``):
    ``patch_embed.fc``, ``pos_embeds.i``, ``layers.i.blocks.j.{norm1,attn.qkv,attn.proj,norm2,
    mlp.linear1,mlp.linear2}``, ``layers.i.downsample.{norm,reduction}``, ``norm``."""
    sd = {}
    gen = torch.Generator().manual_seed(7)

    def t(shape):
        return torch.randn(*shape, generator=gen)

    C = model.embed_dim
    sd["patch_embed.fc.weight"] = t(model.patch_embed.proj.weight.shape)
    sd["patch_embed.fc.bias"] = t((C,))
    for i, stage in enumerate(model.stages):
        dim = C * 2**i
        sd[f"pos_embeds.{i}.pos_embed"] = t(stage.pos_embed.pos_embed.shape)
        sd[f"pos_embeds.{i}.time_embed"] = t(stage.pos_embed.time_embed.shape)
        for j in range(len(stage.blocks)):
            p = f"layers.{i}.blocks.{j}."
            for n in ("norm1", "norm2"):
                sd[p + n + ".weight"] = t((dim,))
                sd[p + n + ".bias"] = t((dim,))
            sd[p + "attn.qkv.weight"] = t((3 * dim, dim))
            sd[p + "attn.qkv.bias"] = t((3 * dim,))
            sd[p + "attn.proj.weight"] = t((dim, dim))
            sd[p + "attn.proj.bias"] = t((dim,))
            sd[p + "mlp.linear1.weight"] = t((4 * dim, dim))
            sd[p + "mlp.linear1.bias"] = t((4 * dim,))
            sd[p + "mlp.linear2.weight"] = t((dim, 4 * dim))
            sd[p + "mlp.linear2.bias"] = t((dim,))
        if i < len(model.stages) - 1:
            sd[f"layers.{i}.downsample.norm.weight"] = t((8 * dim,))
            sd[f"layers.{i}.downsample.norm.bias"] = t((8 * dim,))
            sd[f"layers.{i}.downsample.reduction.weight"] = t((2 * dim, 8 * dim))
    sd["norm.weight"] = t((model.num_features,))
    sd["norm.bias"] = t((model.num_features,))
    return sd


def test_checkpoint_filter_fn_lightning_layout(caplog):
    model = create_model("swift_v1_test")
    ref = _reference_state_dict(model)
    lightning = {
        "epoch": 3,
        "global_step": 100,
        "state_dict": {
            **{f"model.{k}": v for k, v in ref.items()},
            "output_head.hidden.weight": torch.zeros(96, 24),
            "output_head.head.weight": torch.zeros(1, 96),
        },
    }
    with caplog.at_level(logging.INFO, logger="swiftlib.models.swift_v1"):
        mapped = checkpoint_filter_fn(lightning, model)
    # the two Lightning head tensors are reported as not loaded
    assert "59 tensors mapped, 2 entries not loaded" in caplog.text
    assert "output_head.hidden.weight" in caplog.text
    encoder_params = [n for n in model.state_dict() if not n.startswith("head.")]
    assert len(ref) == len(encoder_params) == 59
    assert len(mapped) == 59
    assert not any(k.startswith(("output_head", "model.")) for k in mapped)
    result = model.load_state_dict(mapped, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(
        model.stages[1].blocks[1].mlp.fc1.weight, ref["layers.1.blocks.1.mlp.linear1.weight"]
    )
    assert torch.equal(
        model.stages[0].downsample.reduction.weight, ref["layers.0.downsample.reduction.weight"]
    )
    assert torch.equal(model.stages[1].pos_embed.time_embed, ref["pos_embeds.1.time_embed"])
    assert torch.equal(model.patch_embed.proj.bias, ref["patch_embed.fc.bias"])
    assert torch.equal(model.norm.weight, ref["norm.weight"])


def test_checkpoint_filter_fn_unprefixed_and_errors():
    model = create_model("swift_v1_test")
    ref = _reference_state_dict(model)
    mapped = checkpoint_filter_fn({**ref, "some.other.key": torch.zeros(1)}, model)
    assert len(mapped) == 59
    ref["layers.0.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(
        ValueError,
        match=(
            r"'stages.0.blocks.0.attn.qkv.weight' has shape \(3, 3\) "
            r"but the model expects \(36, 12\)"
        ),
    ):
        checkpoint_filter_fn(ref, model)


def test_create_model_from_lightning_checkpoint(tmp_path):
    model = create_model("swift_v1_test")
    ref = _reference_state_dict(model)
    path = tmp_path / "swift.ckpt"
    torch.save({"epoch": 1, "state_dict": {f"model.{k}": v for k, v in ref.items()}}, path)
    loaded = create_model("swift_v1_test", checkpoint_path=path)
    assert torch.equal(
        loaded.stages[0].blocks[0].attn.qkv.weight, ref["layers.0.blocks.0.attn.qkv.weight"]
    )
