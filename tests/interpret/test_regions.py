"""Region summaries on hand-made maps: a signed noise map shows no enrichment anywhere (the
old ratio to a signed brain mean, ≈ 0, reported 36.6× for noise), a planted region does."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from swiftlib.interpret.regions import summarise_by_region

SHAPE = (20, 24, 28)


@pytest.fixture(scope="module")
def atlas():
    labels = np.zeros(SHAPE, np.int16)
    labels[2:7, 3:9, 4:10] = 1
    labels[10:16, 12:18, 5:12] = 2
    labels[4:12, 15:22, 16:25] = 3
    return nib.Nifti1Image(labels, np.diag([8.0, 8.0, 8.0, 1.0]))


def _map(data, atlas):
    return nib.Nifti1Image(data.astype(np.float32), atlas.affine)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_signed_noise_map_shows_no_enrichment(atlas, seed):
    noise = np.random.default_rng(seed).normal(size=SHAPE)  # signed, brain mean ≈ 0
    brain = _map(np.ones(SHAPE), atlas)
    table = summarise_by_region(_map(noise, atlas), atlas, mask_img=brain)
    assert table["ratio_to_brain"].between(0.85, 1.15).all(), table
    assert table["auroc"].between(0.4, 0.6).all(), table
    assert abs(table["share"].sum() - table["num_voxels"].sum() / noise.size) < 0.02


def test_planted_region_ranks_first_in_either_sign(atlas):
    rng = np.random.default_rng(0)
    data = rng.normal(size=SHAPE)
    region2 = np.asarray(atlas.dataobj) == 2
    data[region2] = -4.0 + rng.normal(0, 0.5, region2.sum())  # a consistently negative region
    table = summarise_by_region(_map(data, atlas), atlas, labels={2: "planted"})
    top = table.iloc[0]
    assert top["region"] == "planted" and top["mean"] < -3
    assert top["ratio_to_brain"] > 2.5 and top["auroc"] > 0.99
    assert table.iloc[1:]["auroc"].between(0.3, 0.6).all()


def test_sanity_check_sentences():
    from swiftlib.interpret.regions import describe_sanity_checks

    ok = describe_sanity_checks({"trained_auroc": 0.914, "randomised_auroc": 0.463}, "sex")
    assert "voxel AUROC 0.91" in ok and "(0.46)" in ok and "depends on what the model learned" in ok
    copy = describe_sanity_checks({"trained_auroc": 0.95, "randomised_auroc": 0.82}, "age")
    assert "so does a randomised model's (0.82)" in copy and "smoothgrad" in copy
    flat = describe_sanity_checks({"trained_auroc": 0.518, "randomised_auroc": 0.496}, "sex")
    assert "voxel AUROC 0.52" in flat and "it is flat" in flat and "0.5180" not in flat
    null = describe_sanity_checks({"planted_preference": 0.492}, "null_label")
    assert "0.49 (0.5 = none): no preference, as expected" in null
