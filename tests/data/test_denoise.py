"""Denoising with fMRIPrep confounds equals nilearn called directly; its failures name the
scan; the QC table reports frames, motion and coverage."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from swiftlib.data.denoise import find_confounds
from swiftlib.data.preprocess import PreprocessConfig, PreprocessError, preprocess
from swiftlib.data.store import open_store
from tests.data.bids_fixtures import GRID, make_derivatives, write_scan


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """One fMRIPrep scan (26 frames at TR 1.5 s) with its confounds table."""
    root = make_derivatives(
        tmp_path_factory.mktemp("den") / "d", {"02": [dict(num_frames=26, seed=4, tr=1.5)]}
    )
    return next(root.glob("sub-02/func/*_bold.nii.gz"))


def _cfg(**kw):
    return PreprocessConfig(**{"voxel_size": 8.0, "grid": GRID, "min_frames": 10, **kw})


@pytest.mark.parametrize("strategy", ["simple", "scrubbing", "compcor"])
def test_denoising_equals_nilearn_called_directly(scan, tmp_path, strategy):
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.signal import clean

    report = preprocess(
        scan, tmp_path / "s", config=_cfg(denoise=strategy, normalisation="none"), progress=False
    )
    assert report.ok, report.failed
    st = open_store(tmp_path / "s")
    mask, geom = st.mask("sub-02"), st.geometry("sub-02")
    got = st.read_subject("sub-02")[mask].astype(np.float32)  # (N, T')
    # the same voxels of the source file, cleaned by nilearn directly
    src = nib.load(scan).get_fdata(dtype=np.float32)  # (X, Y, Z, T), RAS on the store lattice
    src_ijk = np.argwhere(mask) + np.asarray(geom.offset)
    series = src[tuple(src_ijk.T)]  # (N, T)
    confounds, sample_mask = load_confounds_strategy(str(scan), denoise_strategy=strategy)
    expected = clean(
        series.T,
        confounds=confounds,
        sample_mask=sample_mask,
        t_r=1.5,
        detrend=False,
        standardize=None,
        filter=False,
    ).T  # (N, T')
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3)  # fp16 storage
    kept = series if sample_mask is None else series[:, sample_mask]
    assert np.abs(expected - kept).mean() > 1.0  # it removed something
    stats = st.norm_stats("sub-02")["denoise"]
    assert stats["strategy"] == strategy and stats["method"] == "nilearn.signal.clean"
    qc = pd.read_csv(tmp_path / "s" / "qc.tsv", sep="\t").iloc[0]
    fd = pd.read_csv(find_confounds(scan), sep="\t", na_values="n/a")["framewise_displacement"]
    assert qc["mean_fd"] == pytest.approx(fd.mean(), abs=1e-4)  # the first frame is n/a
    assert qc["frames_source"] == 26 and qc["tr"] == 1.5 and qc["denoise"] == strategy
    censored = 1 if strategy == "scrubbing" else 0  # the fixture's one motion spike
    assert qc["frames_censored"] == censored and qc["frames"] == 26 - censored
    assert st.num_frames("sub-02") == 26 - censored
    assert st.manifest["dataset_info"]["config"]["denoise"] == strategy


def test_denoise_without_confounds_fails_that_scan_by_name(tmp_path, scan):
    d = tmp_path / "d" / "sub-05" / "func"
    bare = write_scan(d, "05", 26, seed=7, tr=1.5, confounds=False)
    with_conf = write_scan(tmp_path / "d" / "sub-06" / "func", "06", 26, seed=8, tr=1.5)
    bad = tmp_path / "d" / "sub-07" / "func"
    broken = write_scan(bad, "07", 26, seed=9, tr=1.5)
    table = pd.read_csv(find_confounds(broken), sep="\t")
    table.drop(columns=["csf"]).to_csv(find_confounds(broken), sep="\t", index=False)
    report = preprocess(
        tmp_path / "d", tmp_path / "s", config=_cfg(denoise="simple"), progress=False
    )
    assert report.written == ["sub-06"] and with_conf.exists()
    assert str(bare) in report.failed["sub-05"]
    assert "needs fMRIPrep's confounds table" in report.failed["sub-05"]
    assert "without --denoise" in report.failed["sub-05"]
    assert str(broken) in report.failed["sub-07"] and "csf" in report.failed["sub-07"]


def test_denoise_settings_are_checked():
    with pytest.raises(PreprocessError, match="denoise='aroma'.*did you mean|denoise='aroma'"):
        PreprocessConfig(denoise="aroma")
    with pytest.raises(PreprocessError, match="scrubbing.*not evenly spaced"):
        PreprocessConfig(denoise="scrubbing", target_tr=0.8)
    with pytest.raises(PreprocessError, match="target_tr=50"):
        PreprocessConfig(target_tr=50)
    assert PreprocessConfig(denoise="").denoise is None
