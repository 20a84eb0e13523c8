"""The simple baselines on a synthetic cohort whose ``sex`` label is planted as a coupling
between two regions: connectivity finds it, a label independent of the data stays at chance."""

from __future__ import annotations

import numpy as np
import pytest

from swiftlib.training.baselines import default_parcellation, fit_baselines, scan_features

# 10 mm, 60 frames (correlations need frames), low noise: the planted coupling is clear
KW = dict(
    num_subjects=40,
    seed=11,
    voxel_size=10.0,
    grid=(16, 20, 16),
    num_frames=60,
    noise_pct=0.5,
    region_sigma_mm=12.0,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = tmp_path_factory.mktemp("baselines")
    return make_synthetic_cohort(root / "store", config=SyntheticConfig(**KW), progress=False)


def test_connectivity_baseline_finds_the_planted_coupling(store):
    ids = store.subject_ids
    res = fit_baselines(
        store, ids[:28], ids[28:], "sex", baselines=["connectivity"], num_parcels=16
    )
    row = res.scores.set_index("baseline").loc["connectivity"]
    assert row["test"] >= 0.85 and row["nested_cv"] >= 0.8, row
    assert row["num_features"] == 16 * 15 // 2 and row["num_train"] == 28
    m = res.metrics()
    assert m["test/baseline_connectivity_auroc"] == row["test"]
    assert "train/baseline_connectivity_nested_cv_auroc" in m
    assert list(res.predictions["subject_id"]) == ids[28:]


def test_null_label_stays_near_chance(store):
    ids = store.subject_ids
    res = fit_baselines(
        store, ids[:28], ids[28:], "null_label", baselines=["connectivity"], num_parcels=16
    )
    row = res.scores.set_index("baseline").loc["connectivity"]
    assert abs(row["nested_cv"] - 0.5) < 0.15 and abs(row["test"] - 0.5) < 0.2, row


def test_features_and_parcellation(store):
    atlas = default_parcellation(store, num_parcels=12, seed=0)
    labels = np.asarray(atlas.dataobj)
    mask = store.brain_mask()
    assert set(np.unique(labels[mask])) == set(range(1, 13)) and (labels[~mask] == 0).all()
    sizes = np.bincount(labels[mask])[1:]
    assert sizes.max() < 3 * sizes.min()  # compact parcels of comparable size
    f = scan_features(store, store.subject_ids[:3], atlas)
    assert f["temporal_sd"].shape == (3, int(mask.sum())) and (f["temporal_sd"] > 0).all()
    assert f["connectivity"].shape == (3, 66) and np.isfinite(f["connectivity"]).all()
    with pytest.raises(ValueError, match="num_parcels=1: expected 2 to"):
        default_parcellation(store, num_parcels=1)
    with pytest.raises(ValueError, match=r"baselines \['fc'\]: expected some of"):
        scan_features(store, store.subject_ids[:2], atlas, kinds=["fc"])
    with pytest.raises(KeyError, match="label 'iq' is not declared"):
        fit_baselines(store, store.subject_ids[:8], store.subject_ids[8:], "iq")
    with pytest.raises(ValueError, match=r"in both the training and the test set"):
        fit_baselines(store, store.subject_ids[:8], store.subject_ids[7:], "sex")
