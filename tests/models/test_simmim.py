"""SimMIM: mask generator, mask token placement, decoder shapes, loss on masked voxels."""

from __future__ import annotations

import pytest
import torch

from swiftlib.models import MaskGenerator, SimMIM, SimMIMConfig, create_model, fit_padding

from .conftest import input_for

GRID = (6, 8, 10, 3)  # token grid (D', H', W', T'), distinct sizes


@pytest.mark.parametrize("strategy", ["random", "tube", "block"])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_mask_ratio_exact(strategy, ratio):
    gen = MaskGenerator(ratio, (2, 2, 2, 1), strategy, seed=0)
    mask = gen(3, GRID)
    assert mask.shape == (3, *GRID) and mask.dtype == torch.bool
    blocks = 3 * 4 * 5 * (3 if strategy != "tube" else 1)
    expected = round(ratio * blocks) / blocks
    assert mask.float().mean(dim=(1, 2, 3, 4)).tolist() == pytest.approx([expected] * 3)
    # masks come in whole 2×2×2×1 blocks
    assert torch.equal(
        mask[:, ::2, ::2, ::2]
        .repeat_interleave(2, 1)
        .repeat_interleave(2, 2)
        .repeat_interleave(2, 3),
        mask,
    )


def test_tube_same_over_time_and_block_contiguous():
    tube = MaskGenerator(0.5, (2, 2, 2, 1), "tube", seed=1)(2, GRID)
    assert all(torch.equal(tube[..., t], tube[..., 0]) for t in range(GRID[3]))
    gen = MaskGenerator(0.4, (1, 1, 1, 1), "block", seed=1)
    block = gen(1, (8, 8, 8, 4))[0].float()
    rand = MaskGenerator(0.4, (1, 1, 1, 1), "random", seed=1)(1, (8, 8, 8, 4))[0].float()

    def same_neighbour(m):  # fraction of masked voxels whose D-neighbour is masked too
        return ((m[1:] * m[:-1]).sum() / m[1:].sum()).item()

    assert same_neighbour(block) > same_neighbour(rand) + 0.2


def test_mask_seeded():
    a = MaskGenerator(0.5, seed=3)(2, GRID)
    b = MaskGenerator(0.5, seed=3)(2, GRID)
    c = MaskGenerator(0.5, seed=4)(2, GRID)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mask_ratio": 0.9}, r"mask_ratio \(0.9\) must be in \[0.2, 0.8\]"),
        ({"mask_ratio": 0.1}, r"mask_ratio \(0.1\) must be in \[0.2, 0.8\]"),
        (
            {"strategy": "grid"},
            r"mask strategy must be one of \('random', 'tube', 'block'\), got 'grid'",
        ),
        ({"mask_patch": (2, 0, 2, 1)}, r"mask_patch \(2, 0, 2, 1\) must be ≥ 1"),
    ],
)
def test_mask_generator_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskGenerator(**kwargs)


def test_mask_grid_not_divisible():
    with pytest.raises(
        ValueError, match=r"token grid 5×8×10×3 is not divisible by mask_patch 2×2×2×1 on axes D"
    ):
        MaskGenerator(0.5)(1, (5, 8, 10, 3))


def test_forward_shapes_and_mask_token_inserted_after_patch_embed():
    model = create_model("simmim_swift_v2_test", seed=0).eval()
    x = input_for(model)  # (2, 1, 12, 16, 20, 6)
    out = model(x)
    assert out.reconstruction.shape == x.shape
    assert out.mask.shape == (2, 1, 12, 16, 20, 6)
    assert out.token_mask.shape == (2, 6, 8, 10, 3)
    assert out.mask.float().mean().item() == pytest.approx(0.5)
    # the masked voxels' content cannot reach the encoder: changing it changes nothing
    x2 = torch.where(out.mask, torch.randn_like(x), x)
    with torch.no_grad():
        out2 = model(x2, mask=out.token_mask)
        out1 = model(x, mask=out.token_mask)
    torch.testing.assert_close(out1.reconstruction, out2.reconstruction)
    with pytest.raises(
        ValueError, match=r"mask has shape \(2, 6, 8, 10\), expected the token grid"
    ):
        model(x, mask=out.token_mask[..., 0])


def test_loss_only_on_masked_voxels():
    model = create_model("simmim_swift_v1_test", seed=0)
    x = input_for(model)
    with torch.no_grad():
        out = model(x)
    recon = out.reconstruction.clone()
    changed = torch.where(out.mask, recon, recon + 10.0)  # unmasked voxels moved
    base = model.reconstruction_loss(recon, x, out.mask)
    torch.testing.assert_close(base, out.loss)
    torch.testing.assert_close(model.reconstruction_loss(changed, x, out.mask), base)
    moved_masked = torch.where(out.mask, recon + 1.0, recon)
    assert model.reconstruction_loss(moved_masked, x, out.mask) > base
    manual = (recon - x).abs()[out.mask.expand_as(x)].mean()
    torch.testing.assert_close(base, manual)


def test_loss_brain_voxels_only():
    model = create_model("simmim_swift_v1_test", seed=0)
    x = input_for(model)
    brain = torch.zeros(1, 1, 8, 12, 16, dtype=torch.bool)
    brain[..., 2:6, 3:9, 4:12] = True
    with torch.no_grad():
        out = model(x, brain_mask=brain)
    recon = out.reconstruction
    outside = torch.where(brain[..., None].expand_as(x), recon, recon - 5.0)
    torch.testing.assert_close(model.reconstruction_loss(outside, x, out.mask, brain), out.loss)
    with pytest.raises(ValueError, match="brain_mask must be"):
        model.reconstruction_loss(recon, x, out.mask, brain[..., :4])
    with pytest.raises(ValueError, match="shapes differ"):
        model.reconstruction_loss(recon[..., :3], x, out.mask)
    # brain_only derives the brain from non-zero voxels
    derived = create_model("simmim_swift_v1_test", seed=0, brain_only=True)
    derived.load_state_dict(model.state_dict())
    xz = x * brain[..., None]
    with torch.no_grad():
        a = derived(xz, mask=out.token_mask)
        b = model(xz, mask=out.token_mask, brain_mask=brain)
    torch.testing.assert_close(a.loss, b.loss)


@pytest.mark.parametrize("loss", ["l1", "l2", "smooth_l1"])
def test_loss_kinds(loss):
    model = create_model("simmim_swift_v1_test", loss=loss)
    x = torch.zeros(1, 1, 8, 12, 16, 6)
    recon = torch.full_like(x, 2.0)
    mask = torch.ones(1, 1, 8, 12, 16, 6, dtype=torch.bool)
    expected = {"l1": 2.0, "l2": 4.0, "smooth_l1": 1.5}[loss]
    assert model.reconstruction_loss(recon, x, mask).item() == pytest.approx(expected)


def test_simmim_validation_and_interface():
    with pytest.raises(
        ValueError, match=r"loss must be one of \('l1', 'l2', 'smooth_l1'\), got 'l3'"
    ):
        create_model("simmim_swift_v1_test", loss="l3")
    with pytest.raises(TypeError, match="SimMIM needs an encoder with `patch_embed`"):
        SimMIM(SimMIMConfig(encoder="swift_v1_test"), encoder=torch.nn.Linear(2, 2))
    model = create_model("simmim_swift_v2_test", encoder_overrides={"embed_dim": 16})
    assert model.encoder.embed_dim == 16
    assert "mask_token" in model.no_weight_decay()
    assert "encoder.stages.0.pos_embed.pos_embed" in model.no_weight_decay()
    m = model.group_matcher()
    assert m["stem"].startswith("^encoder\\.patch_embed") and "^mask_token" in m["stem"]
    model.set_grad_checkpointing()
    assert model.encoder.grad_checkpointing
    assert fit_padding((12, 16, 18, 5), "simmim_swift_v2_test") == (0, 0, 2, 1)
