import numpy as np
import pytest
from scipy import stats

from swiftlib.data.geometry import crop_or_pad
from swiftlib.data.synthetic import REGIONS, SyntheticConfig, default_grid, make_synthetic_cohort
from swiftlib.utils.io import read_json


def _region_mask(store, name):
    import nibabel as nib

    img = nib.load(store.root / "ground_truth" / f"region_{name}.nii.gz")
    geom = store.geometry(store.subject_ids[0])
    return crop_or_pad(np.asarray(img.dataobj) > 0, geom.offset, store.grid, fill=False)


def _region_series(store, names):
    masks = {n: _region_mask(store, n) for n in names}
    out = {}
    for sid in store.subject_ids:
        data = store.read_subject(sid).astype(np.float32)  # (D, H, W, T)
        out[sid] = {n: data[m].mean(0) for n, m in masks.items()}  # (T,) region mean
    return out


def test_ground_truth_files_describe_the_planted_labels(synth_store):
    info = read_json(synth_store.root / "ground_truth" / "ground_truth.json")
    assert info["labels"]["sex"]["regions"] == ["sex_a", "sex_b"]
    assert info["labels"]["age"]["regions"] == ["age"]
    assert info["labels"]["null_label"]["regions"] == []
    for name in REGIONS:
        m = _region_mask(synth_store, name)
        assert 1 <= m.sum() < 0.05 * m.size  # a compact region inside the grid
        assert (m & ~synth_store.mask(synth_store.subject_ids[0])).sum() == 0  # inside the brain
    assert set(synth_store.labels) == {"sex", "age", "null_label"}
    tbl = synth_store.subjects
    assert sorted(tbl["sex"].unique()) == [0, 1] and tbl["sex"].sum() == len(tbl) // 2
    assert tbl["age"].between(45, 80).all() and tbl["site"].nunique() == 3


def test_planted_sex_connectivity_and_age_amplitude_are_present(synth_store):
    series = _region_series(synth_store, ["sex_a", "sex_b", "age"])
    tbl = synth_store.subjects.loc[list(series)]
    conn = np.array([np.corrcoef(s["sex_a"], s["sex_b"])[0, 1] for s in series.values()])
    amp = np.array([s["age"].std() for s in series.values()])
    sex = tbl["sex"].to_numpy()
    t_sex = stats.ttest_ind(conn[sex == 1], conn[sex == 0])
    assert t_sex.pvalue < 1e-3 and conn[sex == 1].mean() > conn[sex == 0].mean() + 0.3
    r_age = stats.pearsonr(amp, tbl["age"].to_numpy())
    assert r_age.statistic > 0.6 and r_age.pvalue < 0.05
    null = tbl["null_label"].to_numpy()
    assert stats.ttest_ind(conn[null == 1], conn[null == 0]).pvalue > 0.05  # the negative control
    assert stats.ttest_ind(amp[null == 1], amp[null == 0]).pvalue > 0.05


def test_deterministic_bit_for_bit_and_seed_sensitive(tmp_path, synth_cohort):
    store, _, cfg = synth_cohort
    cfg2 = SyntheticConfig(**{**cfg.__dict__, "num_subjects": 12})
    again = make_synthetic_cohort(tmp_path / "again", config=cfg2, progress=False)
    for sid in ("sub-0001", "sub-0007"):
        assert np.array_equal(again.read_subject(sid), store.read_subject(sid))
    assert again.subjects.drop(columns=[]).equals(store.subjects)
    other = make_synthetic_cohort(
        tmp_path / "other", config=SyntheticConfig(**{**cfg.__dict__, "seed": 4}), progress=False
    )
    assert not np.array_equal(other.read_subject("sub-0001"), store.read_subject("sub-0001"))


def test_normalisation_contract_on_the_store(synth_store):
    sid = synth_store.subject_ids[0]
    data = synth_store.read_subject(sid).astype(np.float64)
    mask = synth_store.mask(sid)
    brain = data[mask]
    assert abs(brain.mean()) < 1e-2 and abs(brain.std() - 1.0) < 1e-2  # global z-score
    assert np.all(data[~mask] == brain.min())  # background = in-brain minimum (SwiFT)


def test_config_validation():
    with pytest.raises(ValueError, match="num_subjects=2"):
        SyntheticConfig(num_subjects=2)
    with pytest.raises(ValueError, match="num_sites=9"):
        SyntheticConfig(num_sites=9)
    with pytest.raises(ValueError, match="num_frames=3"):
        SyntheticConfig(num_frames=3)
    with pytest.raises(ValueError, match="voxel_size=0"):
        SyntheticConfig(voxel_size=0)
    with pytest.raises(ValueError, match="empty at tr=9"):
        SyntheticConfig(tr=9.0, bands_hz=(0.06, 0.1))
    with pytest.raises(TypeError, match="either config"):
        make_synthetic_cohort("/nonexistent", config=SyntheticConfig(), seed=1)
    assert default_grid(2.0) == (96, 96, 96) and default_grid(4.0) == (48, 48, 48)
    assert default_grid(8.0) == (24, 24, 24)


def test_a_store_of_other_settings_is_refused_and_overwrite_makes_it_again(tmp_path):
    from swiftlib.data import open_store
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    small = dict(num_subjects=4, num_frames=12, voxel_size=8.0, seed=0)
    out, bids = tmp_path / "store", tmp_path / "bids"
    make_synthetic_cohort(out, config=SyntheticConfig(**small), export_nifti=bids, progress=False)
    first = open_store(out).read_window("sub-0001", 0, 12).copy()
    # the same settings resume (nothing regenerated)
    make_synthetic_cohort(out, config=SyntheticConfig(**small), progress=False)
    other = SyntheticConfig(**{**small, "num_frames": 16, "seed": 1})
    with pytest.raises(ValueError, match=r"num_frames=12 there, 16 now.*overwrite=True"):
        make_synthetic_cohort(out, config=other, progress=False)
    assert np.array_equal(open_store(out).read_window("sub-0001", 0, 12), first)  # untouched
    store = make_synthetic_cohort(
        out, config=other, export_nifti=bids, overwrite=True, progress=False
    )
    assert {store.num_frames(s) for s in store.subject_ids} == {16}  # no subject of the old one
    assert not np.array_equal(store.read_window("sub-0001", 0, 12), first)
