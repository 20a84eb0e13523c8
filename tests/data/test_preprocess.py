import json
import os
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from swiftlib.data.preprocess import (
    PreprocessConfig,
    PreprocessError,
    discover_inputs,
    load_bold,
    normalise,
    preprocess,
)
from swiftlib.data.store import open_store
from swiftlib.utils.io import sha256_file


def _cfg(cohort_cfg, **kw):
    base = dict(voxel_size=cohort_cfg.voxel_size, grid=cohort_cfg.grid, min_frames=20)
    return PreprocessConfig(**{**base, **kw})


def _first_bold(export):
    return sorted(export.glob("sub-*/func/*_bold.nii.gz"))[0]


def _save(img_data, affine, path, tr=1.0, code=4):
    img = nib.Nifti1Image(img_data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if img_data.ndim == 4:
        img.header["pixdim"][4] = tr
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    nib.save(img, path)
    return path


def test_preprocessing_the_nifti_export_reproduces_the_synthetic_store(tmp_path, synth_cohort):
    store, export, cfg = synth_cohort
    report = preprocess(
        export,
        tmp_path / "pre",
        phenotype=export / "participants.tsv",
        dataset="synthetic",
        config=_cfg(cfg),
        progress=False,
    )
    assert report.ok and report.written == ["sub-0001", "sub-0002", "sub-0003", "sub-0004"]
    pre = open_store(tmp_path / "pre", verify="checksum")
    for sid in pre.subject_ids:
        assert np.array_equal(pre.read_subject(sid), store.read_subject(sid))
        assert np.array_equal(pre.mask(sid), store.mask(sid))
        assert pre.geometry(sid) == store.geometry(sid)
        assert pre.tr(sid) == cfg.tr  # from the BIDS sidecar
    cols = ["sex", "age", "null_label", "site"]
    assert pre.subjects[cols].equals(store.subjects.loc[pre.subject_ids, cols])
    assert (
        pre.labels["sex"]["task"] == "classification" and pre.labels["age"]["task"] == "regression"
    )
    # resume: nothing is redone; a deleted subject is redone
    again = preprocess(
        export,
        tmp_path / "pre",
        dataset="synthetic",
        phenotype=export / "participants.tsv",
        config=_cfg(cfg),
        progress=False,
    )
    assert again.written == [] and len(again.skipped) == 4
    pre.path("sub-0002").unlink()
    third = preprocess(
        export,
        tmp_path / "pre",
        dataset="synthetic",
        phenotype=export / "participants.tsv",
        config=_cfg(cfg),
        progress=False,
    )
    assert third.written == ["sub-0002"] and len(third.skipped) == 3


def test_parallel_matches_serial(tmp_path, synth_cohort):
    store, export, cfg = synth_cohort
    report = preprocess(export, tmp_path / "par", config=_cfg(cfg, n_jobs=2), progress=False)
    assert report.ok and len(report.written) == 4
    par = open_store(tmp_path / "par")
    for sid in par.subject_ids:
        assert np.array_equal(par.read_subject(sid), store.read_subject(sid))


def test_real_spm_normalised_functional_from_nibabel(tmp_path):
    src = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "functional.nii")
    report = preprocess(
        src,
        tmp_path / "func",
        config=PreprocessConfig(voxel_size=4.0, grid=(48, 56, 40)),
        progress=False,
    )
    assert report.ok, report.failed
    st = open_store(tmp_path / "func")
    (sid,) = st.subject_ids
    assert st.num_frames(sid) == 20 and st.tr(sid) == 2.0
    geom = st.geometry(sid)
    # 4x4x8 mm → resampled onto the 4 mm lattice
    assert geom.resampled and geom.source_shape == (17, 21, 3)
    data, mask = st.read_subject(sid).astype(np.float32), st.mask(sid)
    assert 100 < mask.sum() < 0.2 * mask.size  # an EPI mask inside the small field of view
    assert abs(data[mask].mean()) < 1e-2 and abs(data[mask].std() - 1) < 1e-2
    # every in-brain store voxel maps back inside the source field of view
    src_ijk = geom.store_to_source(np.argwhere(mask))
    assert (src_ijk > -1).all() and (src_ijk < np.array(geom.source_shape) + 0.5).all()


def _bad_inputs(tmp, export):
    good = nib.load(_first_bold(export))
    data = np.asarray(good.dataobj, dtype=np.float32)
    aff = good.affine
    d = tmp / "in"
    d.mkdir()
    files = {}
    shutil.copy(_first_bold(export), d / "sub-01_space-MNI_bold.nii.gz")
    shutil.copy(
        str(_first_bold(export)).replace(".nii.gz", ".json"), d / "sub-01_space-MNI_bold.json"
    )
    files["sub-02"] = _save(data[..., 0], aff, d / "sub-02_bold.nii.gz")
    raw = (d / "sub-01_space-MNI_bold.nii.gz").read_bytes()
    (d / "sub-03_bold.nii.gz").write_bytes(raw[: len(raw) // 2])
    (d / "sub-04_bold.nii.gz").write_text("this is not an image\n")
    nan = data.copy()
    nan[10, 10, 10, 3] = np.nan
    _save(nan, aff, d / "sub-05_bold.nii.gz")
    const = np.where(data != 0, 7.0, 0.0).astype(np.float32)
    _save(const, aff, d / "sub-06_bold.nii.gz")
    _save(data[..., :10], aff, d / "sub-07_bold.nii.gz")
    _save(data, aff, d / "sub-08_bold.nii.gz", tr=0.0)
    _save(data, aff, d / "sub-09_bold.nii.gz", tr=2000.0)
    _save(data, aff, d / "sub-10_bold.nii.gz", code=1)
    _save(data, aff, d / "sub-11_bold.nii.gz")  # fine, but not in the phenotype table
    return d


EXPECTED_ERRORS = {
    "sub-02": "image is 3D with shape .*expected 4D",
    "sub-03": "truncated or corrupt",
    "sub-04": "not a readable NIfTI image",
    "sub-05": "1 NaN/Inf voxel values",
    "sub-06": "zero variance",
    "sub-07": "10 frames; expected at least 20",
    "sub-08": "TR is missing",
    "sub-09": "TR=2000 s .* implausible",
    "sub-10": "looks like native .*sform_code=1",
    "sub-11": "not in the phenotype table",
}


def test_every_bad_input_is_reported_by_name_and_the_rest_continue(tmp_path, synth_cohort):
    _, export, cfg = synth_cohort
    d = _bad_inputs(tmp_path, export)
    pd.DataFrame(
        {"participant_id": [f"sub-{i:02d}" for i in range(1, 11)], "age": np.arange(10.0) + 40.5}
    ).to_csv(tmp_path / "pheno.tsv", sep="\t", index=False)
    report = preprocess(
        d, tmp_path / "out", phenotype=tmp_path / "pheno.tsv", config=_cfg(cfg), progress=False
    )
    assert report.written == ["sub-01"]
    assert sorted(report.failed) == sorted(EXPECTED_ERRORS)
    for sid, pattern in EXPECTED_ERRORS.items():
        assert re.search(pattern, report.failed[sid]), (sid, report.failed[sid])
        if sid != "sub-11":
            assert f"{sid}_bold.nii.gz" in report.failed[sid]  # names the file
    # nothing partial: only the good subject is in the store; the report is on disk
    assert sorted(p.name for p in (tmp_path / "out" / "subjects").iterdir()) == ["sub-01.h5"]
    assert (tmp_path / "out" / "preprocess_report.json").exists()
    st = open_store(tmp_path / "out")
    assert st.subject_ids == ["sub-01"] and st.subjects.loc["sub-01", "age"] == 40.5
    assert st.labels["age"]["task"] == "regression"  # inferred by the custom adapter


def test_assume_mni_and_tr_override_rescue_inputs(tmp_path, synth_cohort):
    _, export, cfg = synth_cohort
    d = _bad_inputs(tmp_path, export)
    report = preprocess(
        d / "sub-10_bold.nii.gz", tmp_path / "a", config=_cfg(cfg, assume_mni=True), progress=False
    )
    assert report.ok
    report = preprocess(
        d / "sub-09_bold.nii.gz", tmp_path / "b", config=_cfg(cfg, tr=1.0), progress=False
    )
    assert report.ok and open_store(tmp_path / "b").tr("sub-09") == 1.0


def test_existing_store_with_other_settings_is_refused(tmp_path, synth_cohort):
    _, export, cfg = synth_cohort
    preprocess(_first_bold(export), tmp_path / "s", config=_cfg(cfg), progress=False)
    with pytest.raises(
        PreprocessError,
        match=r"existing store has grid=\[20, 24, 22\] but this run asks for \[24, 24, 24\]",
    ):
        preprocess(
            _first_bold(export), tmp_path / "s", config=_cfg(cfg, grid=(24, 24, 24)), progress=False
        )


def test_discovery_errors(tmp_path):
    with pytest.raises(PreprocessError, match="no such file"):
        discover_inputs(tmp_path / "nope")
    with pytest.raises(PreprocessError, match="no 4D NIfTI images found"):
        discover_inputs(tmp_path)


def test_multiple_runs_of_one_participant_get_distinct_keys(tmp_path):
    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    for run in (1, 2):
        (
            func / f"sub-01_task-rest_run-{run}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
        ).write_bytes(b"")
    scans = discover_inputs(tmp_path)
    assert [s.subject_id for s in scans] == ["sub-01_task-rest_run-1", "sub-01_task-rest_run-2"]
    assert {s.participant_id for s in scans} == {"sub-01"}


def test_config_validation(tmp_path):
    with pytest.raises(PreprocessError, match="grid=\\(96, 96\\)"):
        PreprocessConfig(grid=(96, 96))
    with pytest.raises(PreprocessError, match="voxel_size=-2"):
        PreprocessConfig(voxel_size=-2)
    with pytest.raises(PreprocessError, match="normalisation='minmax'"):
        PreprocessConfig(normalisation="minmax")
    with pytest.raises(PreprocessError, match="mask='brain.nii'"):
        PreprocessConfig(mask="brain.nii")
    with pytest.raises(PreprocessError, match="min_frames=0"):
        PreprocessConfig(min_frames=0)
    with pytest.raises(PreprocessError, match="tr=800"):
        PreprocessConfig(tr=800)
    with pytest.raises(PreprocessError, match="n_jobs=0"):
        PreprocessConfig(n_jobs=0)


def test_normalise_methods():
    rng = np.random.default_rng(1)
    data = rng.normal(100, 5, size=(6, 7, 8, 30)).astype(np.float32)
    mask = np.zeros((6, 7, 8), bool)
    mask[1:5, 2:6, 1:7] = True
    data[2, 3, 4] = 42.0  # a constant in-brain voxel
    out, st = normalise(data, mask, "zscore_voxel")
    assert np.all(out[2, 3, 4] == 0) and st["constant_voxels"] == 1
    others = out[mask].copy()
    assert np.allclose(
        np.delete(others, np.flatnonzero((out[mask] == 0).all(1)), 0).mean(1), 0, atol=1e-5
    )
    assert np.all(out[~mask] == st["fill_value"])
    out, st = normalise(data, mask, "psc")
    assert np.all(out[2, 3, 4] == 0) and st["low_mean_voxels"] == 0 and np.all(out[~mask] == 0)
    v = data[1, 2, 1].astype(np.float64)
    assert np.allclose(out[1, 2, 1], 100 * (v - v.mean()) / v.mean(), atol=1e-4)
    dark = data.copy()
    dark[3, 3, 3] = 1e-3  # a voxel with (almost) no signal on average: 0, counted, not a blow-up
    out, st = normalise(dark, mask, "psc")
    assert st["low_mean_voxels"] == 1 and np.all(out[3, 3, 3] == 0) and np.abs(out).max() < 50
    out, st = normalise(data, mask, "none")
    assert np.array_equal(out[mask], data[mask]) and st["fill_value"] == data[mask].min()
    with pytest.raises(PreprocessError, match="mask is empty"):
        normalise(data, np.zeros_like(mask), "zscore_global")


def test_load_bold_reorients_to_ras(tmp_path):
    data = np.random.default_rng(0).normal(size=(5, 6, 7, 20)).astype(np.float32)
    aff = np.diag([-4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = (16, -20, -12)
    p = _save(data, aff, tmp_path / "las.nii.gz")
    out, out_aff, tr = load_bold(p)
    assert out_aff[0, 0] == 4.0 and np.array_equal(out, data[::-1])
    assert tr == 1.0


# -- reliability: truncated files, reruns, report history, Ctrl-C, coverage (issue 14) ------
def test_a_truncated_las_gz_fails_only_its_subject(tmp_path, synth_cohort, capsys):
    """The voxel order is not RAS+, so the truncated stream is first read while reorienting."""
    from swiftlib.cli import main

    _, export, cfg = synth_cohort
    good = nib.load(_first_bold(export))
    data = np.asarray(good.dataobj, dtype=np.float32)[::-1]  # the same voxels in LAS order
    las = good.affine.copy()
    las[0, 0], las[0, 3] = -las[0, 0], good.affine[0, 3] + (data.shape[0] - 1) * las[0, 0]
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(_first_bold(export), d / "sub-01_bold.nii.gz")
    raw = _save(data, las, d / "sub-02_bold.nii.gz", tr=0.8).read_bytes()
    (d / "sub-02_bold.nii.gz").write_bytes(raw[: len(raw) // 2])
    shutil.copy(_first_bold(export), d / "sub-03_bold.nii.gz")
    report = preprocess(d, tmp_path / "out", config=_cfg(cfg), progress=False)
    assert report.written == ["sub-01", "sub-03"]
    assert re.search(
        r"sub-02_bold.nii.gz: truncated or corrupt file \(EOFError", report.failed["sub-02"]
    )
    rc = main(
        [
            "preprocess",
            str(d),
            "--out",
            str(tmp_path / "cli"),
            "--voxel-size",
            str(cfg.voxel_size),
            "--grid",
            *map(str, cfg.grid),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "FAILED sub-02" in err and "Traceback" not in err
    assert open_store(tmp_path / "cli").subject_ids == ["sub-01", "sub-03"]


def _digest(root):
    return {p.name: sha256_file(p) for p in sorted((root / "subjects").glob("*.h5"))}


def test_an_interrupted_store_refuses_other_settings_and_keeps_its_subjects(
    tmp_path, synth_cohort, monkeypatch
):
    import swiftlib.data.preprocess as pp

    _, export, cfg = synth_cohort
    out = tmp_path / "s"
    real, calls = pp._process_one, []

    def interrupted_after_two(scan, root, c):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(scan.subject_id)
        return real(scan, root, c)

    monkeypatch.setattr(pp, "_process_one", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        preprocess(export, out, config=_cfg(cfg, normalisation="psc"), progress=False)
    monkeypatch.setattr(pp, "_process_one", real)
    latest = json.loads((out / "preprocess_report.json").read_text())
    assert latest["interrupted"] and latest["written"] == ["sub-0001", "sub-0002"]
    before, journal = _digest(out), (out / ".progress.jsonl").read_text()
    assert len(before) == 2 and not (out / "manifest.json").exists()
    with pytest.raises(PreprocessError) as err:
        preprocess(
            export, out, config=_cfg(cfg, normalisation="zscore_global", mask="mni"), progress=False
        )
    msg = str(err.value)
    assert "existing store has normalisation='psc' but this run asks for 'zscore_global'" in msg
    assert "existing store has mask='auto' but this run asks for 'mni'" in msg
    assert "--normalisation psc --mask auto" in msg and "--overwrite" in msg and "new --out" in msg
    assert _digest(out) == before and (out / ".progress.jsonl").read_text() == journal
    # the same settings continue where it stopped
    report = preprocess(export, out, config=_cfg(cfg, normalisation="psc"), progress=False)
    assert report.skipped == ["sub-0001", "sub-0002"] and report.written == ["sub-0003", "sub-0004"]
    st = open_store(out, verify="checksum")
    assert st.normalisation == "psc" and _digest(out).items() >= before.items()
    # --overwrite starts again with the new settings; the report history is kept
    report = preprocess(
        export, out, config=_cfg(cfg, normalisation="zscore_global"), progress=False, overwrite=True
    )
    assert len(report.written) == 4 and open_store(out).normalisation == "zscore_global"
    assert len(list((out / "reports").glob("preprocess-*.json"))) == 3  # the refusal wrote none


def test_every_run_keeps_its_report(tmp_path, synth_cohort):
    _, export, cfg = synth_cohort
    out = tmp_path / "s"
    first = preprocess(_first_bold(export), out, config=_cfg(cfg), progress=False)
    second = preprocess(_first_bold(export), out, config=_cfg(cfg), progress=False)
    assert first.history != second.history
    runs = sorted((out / "reports").glob("preprocess-*.json"))
    assert [p.relative_to(out).as_posix() for p in runs] == sorted([first.history, second.history])
    saved = [json.loads(p.read_text()) for p in runs]
    assert sorted(len(r["written"]) for r in saved) == [0, 1]
    assert sorted(len(r["skipped"]) for r in saved) == [0, 1]
    latest = json.loads((out / "preprocess_report.json").read_text())
    assert latest["history"] == second.history and latest["skipped"] == ["sub-0001"]
    assert latest["config"]["grid"] == list(cfg.grid) and latest["finished"] >= latest["started"]


def test_ctrl_c_ends_with_one_line_and_rc_130(tmp_path, synth_cohort):
    import signal
    import subprocess
    import sys
    import time

    _, export, cfg = synth_cohort
    d = tmp_path / "in"
    d.mkdir()
    for i in range(30):  # enough work to be interrupted in the middle
        shutil.copy(_first_bold(export), d / f"sub-{i:03d}_bold.nii.gz")
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "swiftlib.cli", "preprocess", str(d), "--out", str(out)]
    cmd += ["--voxel-size", str(cfg.voxel_size), "--grid", *map(str, cfg.grid), "-q"]
    with open(tmp_path / "stderr.txt", "w") as err:  # a file: a full pipe would block the run
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        while not (out / "preprocess_settings.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # until the store is set up: past the imports, before the cohort ends
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, stderr
    lines = [x for x in stderr.splitlines() if not x.startswith(("INFO", "WARNING"))]
    assert lines == [
        f"swiftlib preprocess: interrupted; the subjects finished so far are kept in {out} — "
        "rerun the same command to resume"
    ], stderr
    assert "Traceback" not in stderr
    report = json.loads((out / "preprocess_report.json").read_text())
    assert report["interrupted"] and len(report["written"]) < 30


def test_a_scan_covering_little_of_the_mni_brain_is_warned(tmp_path):
    src = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "functional.nii")
    report = preprocess(
        src,
        tmp_path / "func",
        config=PreprocessConfig(voxel_size=4.0, grid=(48, 56, 40)),
        progress=False,
    )
    assert report.ok
    (warning,) = report.warnings
    m = re.match(r".*functional\.nii: covers (\d+\.\d)% of the MNI brain mask", warning)
    assert m and 2.0 < float(m.group(1)) < 10.0, warning
    qc = pd.read_csv(tmp_path / "func" / "qc.tsv", sep="\t")
    assert qc["coverage"].iloc[0] == pytest.approx(float(m.group(1)) / 100, abs=1e-3)
    assert np.isnan(qc["mean_fd"].iloc[0])  # no confounds table


def test_a_full_disk_is_reported_as_such(tmp_path, synth_cohort, monkeypatch):
    import errno

    from swiftlib.data.store import StoreWriter

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    _, export, cfg = synth_cohort
    monkeypatch.setattr(StoreWriter, "write_subject", full)
    report = preprocess(_first_bold(export), tmp_path / "s", config=_cfg(cfg), progress=False)
    assert report.written == [] and "no space left on the device" in report.failed["sub-0001"]
    assert json.loads((tmp_path / "s" / "preprocess_report.json").read_text())["failed"]


def test_load_scan_raw_keeps_the_file_numbers_with_the_same_float32_values(tmp_path):
    """``raw=True`` (what preprocess uses) hands back int16 for an unscaled int16 file — in
    any voxel order — whose float32 values are get_fdata's; a scaled file comes back as
    float32 either way; NaN/Inf in a float file are still counted and refused."""
    from swiftlib.data.inputs import load_scan

    rng = np.random.default_rng(0)
    ints = rng.integers(-2000, 30000, size=(5, 6, 7, 4)).astype(np.int16)
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    las[:3, 3] = (8, -10, -6)
    path = _save(ints, las, tmp_path / "sub-01_bold.nii.gz")
    for axcodes in ("RAS", "LAS"):
        raw, aff, _, codes = load_scan(path, axcodes=axcodes, raw=True)
        ref, ref_aff, _, _ = load_scan(path, axcodes=axcodes)
        assert codes == "LAS" and raw.dtype == np.int16 and ref.dtype == np.float32
        assert np.array_equal(raw.astype(np.float32), ref) and np.array_equal(aff, ref_aff)
    img = nib.Nifti1Image(ints, las)
    img.header.set_slope_inter(0.5, 10.0)
    img.header["pixdim"][4] = 1.0
    img.set_sform(las, code=4)
    nib.save(img, tmp_path / "sub-02_bold.nii.gz")
    raw, *_ = load_scan(tmp_path / "sub-02_bold.nii.gz", axcodes="RAS", raw=True)
    ref, *_ = load_scan(tmp_path / "sub-02_bold.nii.gz", axcodes="RAS")
    assert raw.dtype == np.float32 and np.array_equal(raw, ref)
    assert np.array_equal(ref, ints[::-1].astype(np.float32) * 0.5 + 10.0)
    bad = rng.normal(size=(5, 6, 7, 4)).astype(np.float32)
    bad[1, 2, 3, 0], bad[0, 0, 0, 3] = np.nan, np.inf
    _save(bad, las, tmp_path / "sub-03_bold.nii.gz")
    with pytest.raises(PreprocessError, match="sub-03_bold.nii.gz: 2 NaN/Inf voxel values"):
        load_scan(tmp_path / "sub-03_bold.nii.gz", raw=True)
    huge = np.full((5, 6, 7, 4), 1e300)  # finite float64 that overflows float32
    _save(huge, las, tmp_path / "sub-04_bold.nii.gz")
    with pytest.raises(PreprocessError, match="NaN/Inf voxel values"):
        load_scan(tmp_path / "sub-04_bold.nii.gz", raw=True)
