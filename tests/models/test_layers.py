"""Shared blocks: helpers, windows and cached masks, attention paths, patching, RoPE."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from swiftlib.models.layers import (
    AbsolutePosEmbed4D,
    DropPath,
    LayerScale,
    Mlp,
    PatchEmbed4D,
    PatchMerging3D,
    WindowAttention4D,
    apply_rope,
    check_input_grid,
    clip_window,
    compute_attn_mask,
    grid_padding,
    rope_tables,
    to_ntuple,
    window_partition,
    window_reverse,
)
from swiftlib.models.layers.drop import drop_path

# ---------------------------------------------------------------------------- helpers


def test_to_ntuple():
    assert to_ntuple(4, 4) == (4, 4, 4, 4)
    assert to_ntuple([6, 6, 6, 1], 4) == (6, 6, 6, 1)
    with pytest.raises(ValueError, match=r"patch_size must have 4 entries \(D, H, W, T\), got 3"):
        to_ntuple((6, 6, 6), 4, "patch_size")
    with pytest.raises(TypeError, match="must be a number or a sequence"):
        to_ntuple("abc", 4)
    with pytest.raises(ValueError, match="must have 2 entries"):
        to_ntuple((1, 2, 3), 2)


def test_grid_padding_and_errors():
    assert grid_padding((64, 64, 48, 20), (48, 48, 48, 2)) == (32, 32, 0, 0)
    assert grid_padding((90, 96, 80, 10), (48, 48, 48, 1), (96, 96, 96, None)) == (6, 0, 16, 0)
    with pytest.raises(ValueError, match="axis D has size 100 but this model requires exactly 96"):
        grid_padding((100, 96, 96, 20), (48, 48, 48, 1), (96, 96, 96, None))


def test_check_input_grid_messages():
    check_input_grid((1, 1, 96, 96, 96, 20), (48, 48, 48, 2))
    with pytest.raises(
        ValueError, match=r"needs D divisible by 48.*Pad by \(D, H, W, T\) = \(32, 32, 0, 0\)"
    ):
        check_input_grid((1, 1, 64, 64, 48, 20), (48, 48, 48, 2), model_name="m")
    with pytest.raises(ValueError, match="6-D volume batch"):
        check_input_grid((1, 64, 64, 48, 20), (48, 48, 48, 2))
    with pytest.raises(ValueError, match="expects 1 input channel"):
        check_input_grid((1, 2, 96, 96, 96, 20), (48, 48, 48, 2), in_chans=1)
    with pytest.raises(ValueError, match="exceed the size of the position tables"):
        check_input_grid((1, 1, 96, 96, 96, 30), (48, 48, 48, 1), max_shape=(None, None, None, 20))
    with pytest.raises(ValueError, match="crop it to 96"):
        check_input_grid(
            (1, 1, 144, 96, 96, 20), (48, 48, 48, 1), required_shape=(96, 96, 96, None)
        )


# ---------------------------------------------------------------------------- windows


def test_window_partition_roundtrip_distinct_axes():
    x = torch.randn(2, 4, 6, 8, 10, 3)  # (B, D, H, W, T, C)
    win = (2, 3, 4, 5)
    w = window_partition(x, win)
    assert w.shape == (2 * 2 * 2 * 2 * 2, 2 * 3 * 4 * 5, 3)
    # first window = the first block of the grid, row-major inside
    assert torch.equal(w[0].view(2, 3, 4, 5, 3), x[0, :2, :3, :4, :5])
    assert torch.equal(window_reverse(w, win, (4, 6, 8, 10)), x)


def test_clip_window():
    assert clip_window((16, 4, 2, 20), (4, 4, 4, 4), (2, 2, 2, 2)) == ((4, 4, 2, 4), (2, 0, 0, 2))


def _reference_mask(dims, window_size, shift_size):
    """The published slice-based construction (SwiFT v1 ``compute_mask``) as an oracle."""
    img = torch.zeros((1, *dims, 1))
    cnt = 0
    sl = [
        (slice(-w), slice(-w, -s), slice(-s, None))
        for w, s in zip(window_size, shift_size, strict=True)
    ]
    for d, h, w, t in itertools.product(*sl):
        img[:, d, h, w, t, :] = cnt
        cnt += 1
    mw = window_partition(img, window_size).squeeze(-1)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


@pytest.mark.parametrize(
    "dims,window,shift",
    [
        ((4, 6, 8, 10), (2, 3, 4, 5), (1, 1, 2, 2)),
        ((4, 6, 8, 8), (2, 2, 4, 4), (1, 0, 2, 0)),  # unshifted axes
        ((8, 8, 8, 20), (4, 4, 4, 4), (0, 0, 0, 2)),
    ],
)
def test_shift_mask_matches_reference_construction(dims, window, shift):
    ours = compute_attn_mask(dims, window, shift)
    assert torch.equal(ours, _reference_mask(dims, window, shift))


def test_mask_none_without_shift_or_padding_and_padding_masked():
    assert compute_attn_mask((4, 4, 4, 4), (2, 2, 2, 2), (0, 0, 0, 0)) is None
    m = compute_attn_mask((2, 2, 2, 4), (2, 2, 2, 4), (0, 0, 0, 0), valid_grid=(2, 2, 2, 3))
    assert m.shape == (1, 32, 32)
    # key positions with t == 3 are padding: masked for every query
    t_index = torch.arange(32) % 4
    assert (m[0][:, t_index == 3] == -100).all() and (m[0][:, t_index < 3] == 0).all()


def test_mask_is_cached_not_rebuilt():
    compute_attn_mask.cache_clear()
    before = compute_attn_mask.build_cache_info().misses
    a = compute_attn_mask((6, 8, 10, 4), (2, 2, 2, 4), (1, 1, 1, 2))
    b = compute_attn_mask((6, 8, 10, 4), (2, 2, 2, 4), (1, 1, 1, 2))
    assert a is b
    assert compute_attn_mask.build_cache_info().misses - before <= 1


def test_cached_tables_first_built_in_inference_mode_still_train():
    """An evaluation (inference_mode) may fill the caches first; training then saves them
    for backward, which inference tensors refuse."""
    from swiftlib.models.layers.window import permute_tokens, window_gather_index

    grid, window, shift = (6, 10, 14, 6), (2, 2, 2, 3), (1, 1, 1, 1)  # a key no other test uses
    with torch.inference_mode():
        idx, inv = window_gather_index(grid, window, shift)
        mask = compute_attn_mask(grid, window, shift, valid_grid=(5, 10, 14, 6))
    assert not (idx.is_inference() or inv.is_inference() or mask.is_inference())
    x = torch.randn(2, 6 * 10 * 14 * 6, 3, requires_grad=True)
    permute_tokens(x, idx, inv).sum().backward()
    assert x.grad is not None


# ---------------------------------------------------------------------------- attention


@pytest.mark.parametrize(
    "shift,mask_padding,rope",
    [
        ((0, 0, 0, 0), False, None),
        ((1, 1, 1, 2), False, None),
        ((1, 1, 1, 2), True, None),
        ((1, 1, 1, 2), True, (0, 1, 2, 3)),
    ],
)
def test_sdpa_equals_explicit_path(shift, mask_padding, rope):
    attn = WindowAttention4D(
        16, 2, (2, 2, 2, 4), shift, mask_padding=mask_padding, rope_axes=rope
    ).eval()
    x = torch.randn(2, 4, 6, 8, 7, 16)  # T=7: padded to 8
    with torch.no_grad():
        fused = attn(x)
        attn.fused_attn = False
        explicit = attn(x)
    assert fused.shape == x.shape
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [(0, 0, 0, 0), (1, 1, 1, 2)])
def test_weight_padded_sdpa_matches_explicit_with_gradients(shift):
    """On CPU, head_dim 12 is padded to 16 through zero rows of the qkv weight and zero
    columns of proj (three GEMMs, no pad copies): outputs and every gradient equal the
    explicit math, and the parameter gradients keep the parameters' shapes."""
    torch.manual_seed(0)
    attn = WindowAttention4D(36, 3, (2, 2, 2, 4), shift).train()
    assert attn._weight_pad(torch.empty(0)) == 4  # 12 -> 16
    x = torch.randn(2, 4, 6, 8, 7, 36)  # B=2; T=7 padded to 8
    results = []
    for fused in (True, False):
        attn.fused_attn = fused
        attn.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = attn(xi)
        out.pow(2).sum().backward()
        grads = {n: p.grad.clone() for n, p in attn.named_parameters()}
        results.append((out.detach(), xi.grad, grads))
    (out_f, gx_f, gp_f), (out_e, gx_e, gp_e) = results
    torch.testing.assert_close(out_f, out_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_f, gx_e, atol=1e-4, rtol=1e-4)
    for name, p in attn.named_parameters():
        assert gp_f[name].shape == p.shape
        torch.testing.assert_close(gp_f[name], gp_e[name], atol=1e-4, rtol=1e-4)


def test_attention_validation():
    with pytest.raises(ValueError, match=r"dim \(50\) must be divisible by num_heads \(3\)"):
        WindowAttention4D(50, 3)
    with pytest.raises(ValueError, match="shift_size"):
        WindowAttention4D(12, 3, (2, 2, 2, 2), (0, 0, 0, 2))
    with pytest.raises(ValueError, match="even head_dim"):
        WindowAttention4D(12, 4, rope_axes=(3,))


def test_mask_padding_hides_padded_keys():
    """With mask_padding the padded frame cannot influence valid tokens: compare against the
    same attention run on a grid that needs no padding, with the extra frame as content."""
    torch.manual_seed(0)
    attn = WindowAttention4D(8, 2, (1, 1, 1, 4), (0, 0, 0, 0), mask_padding=True).eval()
    x = torch.randn(1, 1, 1, 1, 3, 8)
    with torch.no_grad():
        out = attn(x)
        # manual attention over the 3 valid frames only
        q, k, v = attn.qkv(x.view(3, 8)).view(3, 3, 2, 4).permute(1, 2, 0, 3)
        ref = F.scaled_dot_product_attention(q, k, v).permute(1, 0, 2).reshape(3, 8)
        ref = attn.proj(ref)
    torch.testing.assert_close(out.view(3, 8), ref, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------- patches


def test_patch_embed_shape_and_flatten_order():
    pe = PatchEmbed4D((2, 3, 4, 1), in_chans=2, embed_dim=2 * 3 * 4 * 1 * 2)
    with torch.no_grad():
        pe.proj.weight.copy_(torch.eye(48))
        pe.proj.bias.zero_()
    x = torch.randn(1, 2, 4, 6, 8, 5)
    out = pe(x)
    assert out.shape == (1, 2, 2, 2, 5, 48)
    # block (0,0,0,t=1) flattened in (pd, ph, pw, pt, C) order
    expected = x[0, :, :2, :3, :4, 1].permute(1, 2, 3, 0).reshape(-1)
    torch.testing.assert_close(out[0, 0, 0, 0, 1], expected)


def test_patch_embed_rejects_bad_grid():
    pe = PatchEmbed4D((6, 6, 6, 2), grid_multiple=(48, 48, 48, 2), model_name="swift_v2")
    with pytest.raises(ValueError, match=r"swift_v2 cannot take a 64×64×48×20.*\(32, 32, 0, 0\)"):
        pe(torch.zeros(1, 1, 64, 64, 48, 20))
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbed4D((0, 6, 6, 1))


def test_patch_merging_matches_concatenation_order():
    pm = PatchMerging3D(3, 5)
    x = torch.randn(2, 4, 6, 8, 3, 3)
    ref_in = torch.cat(
        [x[:, i::2, j::2, k::2] for i, j, k in itertools.product(range(2), repeat=3)], -1
    )
    torch.testing.assert_close(pm(x), pm.reduction(pm.norm(ref_in)))
    with pytest.raises(ValueError, match="even token grid"):
        pm(torch.randn(1, 3, 4, 4, 2, 3))


def test_abs_pos_embed():
    pe = AbsolutePosEmbed4D(4, (2, 3, 4, 6))
    x = torch.zeros(1, 2, 3, 4, 5, 4)
    out = pe(x)
    expected = (
        pe.pos_embed[0, :, :, :, :, 0].permute(1, 2, 3, 0)[..., None, :]
        + pe.time_embed[0, :, 0, 0, 0, :5].t()
    )
    torch.testing.assert_close(out[0], expected)
    with pytest.raises(ValueError, match="does not match the spatial position table 2×3×4"):
        pe(torch.zeros(1, 2, 3, 6, 5, 4))
    with pytest.raises(ValueError, match="7 token frames but the temporal position table has 6"):
        pe(torch.zeros(1, 2, 3, 4, 7, 4))
    pe_i = AbsolutePosEmbed4D(4, (2, 3, 4, 6), interpolate=True)
    assert pe_i(torch.zeros(1, 4, 6, 8, 9, 4)).shape == (1, 4, 6, 8, 9, 4)


# ---------------------------------------------------------------------------- misc blocks


def test_drop_path_and_layer_scale():
    x = torch.randn(8, 3, 4)
    dp = DropPath(0.5)
    assert torch.equal(dp.eval()(x), x)
    out = dp.train()(x)
    kept = (out.flatten(1) != 0).any(1)
    torch.testing.assert_close(out[kept], x[kept] * 2)
    assert torch.equal(drop_path(x, 0.0, True), x)
    with pytest.raises(ValueError, match=r"drop_prob \(1.0\) must be in \[0, 1\)"):
        DropPath(1.0)
    ls = LayerScale(4, 0.1)
    torch.testing.assert_close(ls(x), x * 0.1)
    assert Mlp(4, 8, 6)(x).shape == (8, 3, 6)


def test_rope_relative_and_errors():
    cos, sin = rope_tables((1, 1, 1, 8), 8, (3,))
    assert cos.shape == (8, 8)
    q = torch.randn(8).expand(8, 8)
    k = torch.randn(8).expand(8, 8)
    qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    # score depends only on the offset i - j
    assert torch.allclose(qr[3] @ kr[1], qr[6] @ kr[4], atol=1e-5)
    assert not torch.allclose(qr[3] @ kr[1], qr[3] @ kr[3], atol=1e-3)
    with pytest.raises(
        ValueError, match=r"head_dim \(4\) is too small for rotary encoding over 3 axes"
    ):
        rope_tables((2, 2, 2, 1), 4, (0, 1, 2))
