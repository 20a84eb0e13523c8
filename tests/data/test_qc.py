"""The per-scan QC table: MNI brain coverage, merging across runs, stores without qc.tsv."""

import numpy as np
import pandas as pd
import pytest

from swiftlib.data.qc import QC_COLUMNS, mni_coverage, qc_table, write_qc


def _mni_grid(voxel=8.0, grid=(24, 28, 22)):
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = (-96.0, -128.0, -80.0)  # covers MNI x −96…88, y −128…88, z −80…88 mm
    return aff, grid


def test_mni_coverage_of_a_full_box_a_half_and_nothing():
    aff, grid = _mni_grid()
    full = np.ones(grid, bool)
    assert mni_coverage(full, aff) == pytest.approx(1.0, abs=0.005)
    left = full.copy()
    left[13:] = False  # keep voxel centres x ≤ 0 mm: the left hemisphere and the midline
    assert 0.45 < mni_coverage(left, aff) < 0.56
    assert mni_coverage(np.zeros(grid, bool), aff) == 0.0
    # mirrored voxel order (LAS): the same box, the same coverage
    las = aff.copy()
    las[0, 0], las[0, 3] = -8.0, -96.0 + 23 * 8.0
    assert mni_coverage(full, las) == pytest.approx(1.0, abs=0.005)


def _row(sid, coverage):
    return dict.fromkeys(QC_COLUMNS, 0) | {"subject_id": sid, "coverage": coverage}


def test_write_qc_merges_runs_and_drops_scans_no_longer_stored(tmp_path):
    write_qc(tmp_path, [_row("sub-02", 0.9), _row("sub-01", 0.8)], keep={"sub-01", "sub-02"})
    write_qc(tmp_path, [_row("sub-03", 0.7), _row("sub-01", 0.6)], keep={"sub-01", "sub-03"})
    qc = pd.read_csv(tmp_path / "qc.tsv", sep="\t")
    assert qc["subject_id"].tolist() == ["sub-01", "sub-03"]
    assert qc["coverage"].tolist() == [0.6, 0.7] and list(qc.columns) == list(QC_COLUMNS)
    assert not list(tmp_path.glob(".qc.tsv*"))  # no temporary file left


def test_qc_table_of_a_store_without_qc_tsv(synth_store):
    qc = qc_table(synth_store)
    assert qc["subject_id"].tolist() == synth_store.subject_ids
    assert (qc["frames"] == [synth_store.num_frames(s) for s in synth_store.subject_ids]).all()
    assert qc["mean_fd"].isna().all()
    assert (qc["coverage"] > 0.9).all()  # the synthetic brain is the MNI brain
