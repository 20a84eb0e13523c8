"""Attributions: shapes, every method, the source-space round trip, region summaries, the
sanity checks on a small trained model (fast tier) and bad input."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from swiftlib.data.geometry import crop_or_pad
from swiftlib.interpret.attributions import (
    METHODS,
    AtlasError,
    attribute,
    attribute_windows,
    ground_truth,
    ground_truth_mask,
    make_baseline,
    randomised_model,
    recovery_auroc,
    region_preference,
    summarise_by_region,
)
from swiftlib.interpret.inference import load_inference_model
from swiftlib.tasks.common import CheckpointError, ContractError

# the fast-tier sanity check: method and settings used by the notebook and `make science`
CHECK = dict(method="ig", baseline="temporal_mean", aggregate="signed", n_steps=8)


@pytest.fixture(scope="module")
def model(age_run):
    return load_inference_model(age_run.best_checkpoint, device="cpu")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_input_shaped_maps(model, interp_store, method):
    wins = np.stack([interp_store.read_window("sub-0001", s, 8) for s in (0, 8)])  # (2, D, H, W, T)
    x = torch.from_numpy(wins).float()[:, None]  # (2, 1, D, H, W, T)
    a = attribute_windows(
        model,
        x,
        0,
        method=method,
        n_steps=4,
        internal_batch_size=4,
        nt_samples=2,
        occlusion_window=(10, 12, 14),
    )
    assert a.shape == (2, 20, 24, 28, 8) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert a.abs().sum() > 0


def test_ig_completeness_and_baselines(model, interp_store):
    x = torch.from_numpy(interp_store.read_window("sub-0002", 0, 8)).float()[None, None]
    # x: (1, 1, D, H, W, T)
    bg = make_baseline(x, "background")
    assert torch.all(bg == x[0, 0, 0, 0, 0, 0])
    assert torch.allclose(make_baseline(x, "temporal_mean").mean(-1), x.mean(-1))
    assert torch.all(make_baseline(x, 0.5) == 0.5)
    a = attribute_windows(model, x, 0, method="ig", baseline="background", n_steps=64)
    with torch.no_grad():
        delta = (model.forward(x) - model.forward(bg))[0, 0]
    assert float(a.sum()) == pytest.approx(float(delta), rel=0.25, abs=0.05)  # IG completeness
    with pytest.raises(ValueError, match="baseline='mean'"):
        make_baseline(x, "mean")
    with pytest.raises(ValueError, match="method='lime'"):
        attribute_windows(model, x, 0, method="lime")
    with pytest.raises(ValueError, match="occlusion_window=\\(4, 4\\)"):
        attribute_windows(model, x, 0, method="occlusion", occlusion_window=(4, 4))


def test_attribute_aggregates_and_goes_back_to_source_space(age_run, interp_store, tmp_path):
    sids = interp_store.subject_ids[:2]
    att = attribute(
        age_run.best_checkpoint,
        interp_store,
        sids,
        method="saliency",
        windows=2,
        keep_window_maps=True,
        progress=False,
        device="cpu",
    )
    assert set(att.subject_maps) == set(sids) and att.group_map.shape == (20, 24, 28)
    assert len(att.window_maps) == 4 and att.window_maps[0].shape == (20, 24, 28, 8)
    assert [w[1] for w in att.window_index[:2]] == [0, 16]  # 2 of 3 windows, evenly spaced
    first = np.mean([np.abs(w).mean(-1) for w in att.window_maps[:2]], 0)
    np.testing.assert_allclose(att.subject_maps[sids[0]], first, rtol=1e-5)
    assert list(att.class_maps) == [0]
    assert set(att.time_curves.columns) == {"subject_id", "window_start", "frame", "value"}
    assert len(att.time_curves) == 4 * 8
    # source space: the same affine as the ground truth, a planted voxel lands where it came from
    geom = interp_store.geometry(sids[0])
    gt_mask = ground_truth(interp_store)["brain_mask"]
    src = np.zeros(gt_mask.shape, np.float32)
    ijk = (geom.offset[0] + 9, geom.offset[1] + 11, geom.offset[2] + 13)
    src[ijk] = 7.0
    att.group_map = crop_or_pad(src, geom.offset, interp_store.grid)  # a planted store-grid map
    assert att.group_map[9, 11, 13] == 7.0
    img = att.to_nifti(space="source")
    assert img.shape == gt_mask.shape and np.allclose(img.affine, gt_mask.affine)
    assert np.argwhere(np.asarray(img.dataobj) == 7.0).tolist() == [list(ijk)]
    assert int(img.header["sform_code"]) == 4
    store_img = att.to_nifti(space="store")
    assert np.allclose(store_img.affine, interp_store.affine)
    world_src = img.affine @ np.array([*ijk, 1.0])
    world_store = store_img.affine @ np.array([9, 11, 13, 1.0])
    np.testing.assert_allclose(world_src, world_store)
    written = att.save(tmp_path / "maps", subjects=True)
    assert {"group", "class0", sids[0], "time_curves"} <= set(written)
    assert nib.load(written["group"]).shape == gt_mask.shape


def test_subject_abs_is_signed_within_a_subject_and_magnitude_across(age_run, interp_store):
    sids = interp_store.subject_ids[:3]
    att = attribute(
        age_run.best_checkpoint,
        interp_store,
        sids,
        method="grad_x_input",
        aggregate="subject_abs",
        windows=2,
        keep_window_maps=True,
        progress=False,
        device="cpu",
    )
    first = att.subject_maps[sids[0]]
    np.testing.assert_allclose(
        first, np.mean([w.mean(-1) for w in att.window_maps[:2]], 0), rtol=1e-5, atol=1e-8
    )
    assert (first < 0).any() and (first > 0).any()  # subject maps keep their sign
    magnitudes = np.mean([np.abs(att.subject_maps[s]) for s in sids], 0)
    np.testing.assert_allclose(att.group_map, magnitudes, rtol=1e-5)
    assert att.params["aggregate"] == "subject_abs"


def test_noisy_methods_are_seeded(age_run, interp_store):
    sid = interp_store.subject_ids[:1]
    kw = dict(method="smoothgrad", nt_samples=2, windows=1, progress=False, device="cpu")
    torch.manual_seed(123)
    a = attribute(age_run.best_checkpoint, interp_store, sid, **kw)
    torch.manual_seed(456)  # the caller's RNG state does not matter
    b = attribute(age_run.best_checkpoint, interp_store, sid, **kw)
    c = attribute(age_run.best_checkpoint, interp_store, sid, seed=1, **kw)
    assert np.array_equal(a.group_map, b.group_map) and not np.array_equal(a.group_map, c.group_map)
    assert a.params["seed"] == 0 and c.params["seed"] == 1


def test_windows_are_read_with_the_frame_step_the_model_was_trained_on(age_run, interp_store):
    """A model trained on every s-th frame must be explained and embedded on every s-th frame
    (consecutive frames would show it a time scale it never saw)."""
    from swiftlib.interpret.embeddings import extract_embeddings

    model = load_inference_model(age_run.best_checkpoint, device="cpu")
    # read from the checkpoint
    assert model.data["sequence_length"] == 8 and model.data["stride_within_seq"] == 1
    model.data = {**model.data, "stride_within_seq": 3}  # as if trained on every 3rd frame
    sid = interp_store.subject_ids[0]
    att = attribute(
        model,
        interp_store,
        [sid],
        method="saliency",
        keep_window_maps=True,
        progress=False,
        device="cpu",
    )
    assert att.params["stride_within_seq"] == 3
    assert [w[1] for w in att.window_index] == [0]  # 24 frames: one 8x3 window
    x = torch.from_numpy(interp_store.read_window(sid, 0, 8, 3).astype(np.float32))[None, None]
    expected = attribute_windows(model, x, 0, method="saliency")[0].numpy()
    np.testing.assert_allclose(att.window_maps[0], expected, rtol=1e-4, atol=1e-6)
    # an explicit frame step wins; the default (1) reads back-to-back 8-frame windows
    att1 = attribute(
        model,
        interp_store,
        [sid],
        method="saliency",
        stride_within_seq=1,
        progress=False,
        device="cpu",
    )
    assert att1.params["stride_within_seq"] == 1 and att1.params["num_windows"] == 3
    emb = extract_embeddings(
        age_run.best_checkpoint,
        interp_store,
        subjects=[sid],
        level="window",
        stride_within_seq=3,
        progress=False,
        device="cpu",
    )
    assert emb["window_start"].tolist() == [0]


def test_region_summaries_refuse_or_resample_other_grids(interp_store, tmp_path):
    gt = ground_truth(interp_store)
    ref = gt["brain_mask"]
    data = np.asarray(ref.dataobj).astype(np.float32)
    age = ground_truth_mask(interp_store, "age")
    data[age] = 5.0
    img = nib.Nifti1Image(data, ref.affine)
    table = summarise_by_region(img, gt["regions"], mask_img=ref)
    assert table.iloc[0]["region"] == "age" and table.iloc[0]["ratio_to_brain"] > 1
    atlas = nib.Nifti1Image(age.astype(np.int16) * 3, ref.affine)
    by_atlas = summarise_by_region(img, atlas, labels={3: "pcc"})
    assert list(by_atlas["region"]) == ["pcc"] and by_atlas["mean"][0] == 5.0
    coarse = nib.Nifti1Image(
        age[::2, ::2, ::2].astype(np.int16), ref.affine @ np.diag([2, 2, 2, 1])
    )
    with pytest.raises(
        AtlasError,
        match=r"atlas image grid \(shape .*differs from the map's"
        r".*resample='nearest'",
    ):
        summarise_by_region(img, coarse)
    assert summarise_by_region(img, coarse, resample="nearest")["num_voxels"][0] > 0
    scanner = nib.Nifti1Image(age.astype(np.int16), ref.affine)
    scanner.set_sform(ref.affine, code=1)
    mni_img = nib.Nifti1Image(data, ref.affine)
    mni_img.set_sform(ref.affine, code=4)
    with pytest.raises(AtlasError, match="scanner space"):
        summarise_by_region(mni_img, scanner)
    far_affine = np.diag([8.0, 8.0, 8.0, 1.0])
    far_affine[0, 3] = 5000
    far = nib.Nifti1Image(age.astype(np.int16), far_affine)
    with pytest.raises(AtlasError, match="does not overlap"):
        summarise_by_region(img, far, resample="nearest")
    with pytest.raises(AtlasError, match="non-integer values"):
        summarise_by_region(img, nib.Nifti1Image(data * 0.3, ref.affine))
    with pytest.raises(ValueError, match="resample='linear'"):
        summarise_by_region(img, coarse, resample="linear")
    with pytest.raises(AtlasError, match="expected the ground truth's source grid"):
        recovery_auroc(np.zeros((3, 3, 3)), interp_store, "age")
    with pytest.raises(ValueError, match="no planted region"):
        recovery_auroc(img, interp_store, "null_label")
    with pytest.raises(ValueError, match="label 'iq' has no ground truth"):
        ground_truth_mask(interp_store, "iq")
    assert recovery_auroc(img, interp_store, "age") == 1.0
    assert region_preference(img, interp_store, ["age"]) == 1.0
    with pytest.raises(FileNotFoundError, match="ground truth exists only for the synthetic"):
        ground_truth(tmp_path)


def test_sanity_checks_fast_tier(age_run, interp_store, tmp_path):
    """Planted-region recovery on a model trained for seconds, and its collapse under model
    randomisation (loose fast-tier thresholds; the full targets are in test_science.py)."""
    sids = interp_store.subject_ids[:6]
    att = attribute(
        age_run.best_checkpoint,
        interp_store,
        sids,
        windows=2,
        progress=False,
        device="cpu",
        **CHECK,
    )
    rnd = attribute(
        randomised_model(age_run.best_checkpoint, device="cpu"),
        interp_store,
        sids,
        windows=2,
        progress=False,
        device="cpu",
        **CHECK,
    )
    trained = recovery_auroc(att.to_nifti(), interp_store, "age")
    randomised = recovery_auroc(rnd.to_nifti(), interp_store, "age")
    out = {
        "trained_auroc": trained,
        "randomised_auroc": randomised,
        "trained_preference": region_preference(att.to_nifti(), interp_store, ["age"]),
        "test_r2": age_run.metrics.get("test/r2"),
    }
    (tmp_path / "fast_sanity.json").write_text(json.dumps(out))
    print("fast-tier sanity:", out)
    assert trained >= 0.65, out  # measured 0.71 (8 subjects x 3 windows: 0.83)
    assert randomised <= trained - 0.1, out


def test_bad_input_is_named(age_run, pretrain_ckpt, interp_store, synth_store):
    ckpt = age_run.best_checkpoint
    with pytest.raises(CheckpointError, match="'pretrain' checkpoint has no prediction head"):
        attribute(pretrain_ckpt, interp_store, ["sub-0001"], progress=False)
    with pytest.raises(CheckpointError, match="its head predicts 'age', not 'sex'"):
        attribute(ckpt, interp_store, ["sub-0001"], label="sex", progress=False)
    with pytest.raises(ValueError, match="target=3: a regression head has one output"):
        attribute(ckpt, interp_store, ["sub-0001"], target=3, progress=False)
    with pytest.raises(ValueError, match=r"not in store .*\['sub-0100'\]"):
        attribute(ckpt, interp_store, ["sub-0100"], progress=False)
    with pytest.raises(
        ContractError,
        match=r"grid: checkpoint expects \[20, 24, 28\], "
        r"store .* has \[20, 24, 22\]",
    ):
        attribute(ckpt, synth_store, ["sub-0001"], progress=False)
    with pytest.raises(ValueError, match="aggregate='max'"):
        attribute(ckpt, interp_store, ["sub-0001"], aggregate="max", progress=False)
    with pytest.raises(ValueError, match="windows=0"):
        attribute(ckpt, interp_store, ["sub-0001"], windows=0, progress=False)
    with pytest.raises(ValueError, match="subjects is empty"):
        attribute(ckpt, interp_store, [], progress=False)
    with pytest.raises(CheckpointError, match="randomisation checks need a fine-tuning checkpoint"):
        randomised_model(pretrain_ckpt, device="cpu")
