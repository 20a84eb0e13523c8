"""fMRIPrep-style derivatives with sessions, tasks and runs → scans of one participant; BIDS
filters; TR from sidecar vs header; runs of different TRs; resampling to a target TR."""

import json

import numpy as np
import pytest

from swiftlib.data.inputs import discover_inputs
from swiftlib.data.preprocess import PreprocessConfig, PreprocessError, preprocess
from swiftlib.data.store import open_store
from swiftlib.data.temporal import METHOD
from tests.data.bids_fixtures import GRID, make_derivatives

RUNS = {
    "01": [
        dict(ses="1", run="1", num_frames=30, seed=0),
        dict(ses="1", run="2", num_frames=32, seed=1),
        dict(ses="2", run="1", num_frames=34, seed=2),
        dict(ses="1", task="nback", num_frames=31, seed=3),
    ],
    "02": [dict(num_frames=33, seed=4)],
}


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    return make_derivatives(tmp_path_factory.mktemp("bids") / "derivatives", RUNS)


def _cfg(**kw):
    return PreprocessConfig(**{"voxel_size": 8.0, "grid": GRID, "min_frames": 10, **kw})


def test_sessions_and_runs_become_scans_of_one_participant(bids, tmp_path):
    report = preprocess(bids, tmp_path / "s", config=_cfg(task="rest"), progress=False)
    assert report.ok, report.failed
    st = open_store(tmp_path / "s")
    assert st.subject_ids == [
        "sub-01_ses-1_task-rest_run-1",
        "sub-01_ses-1_task-rest_run-2",
        "sub-01_ses-2_task-rest_run-1",
        "sub-02",
    ]
    assert st.subjects["participant_id"].tolist() == ["sub-01"] * 3 + ["sub-02"]
    assert [st.num_frames(s) for s in st.subject_ids] == [30, 32, 34, 33]
    # the nback run was filtered out; the QC table has one row per stored scan
    import pandas as pd

    qc = pd.read_csv(tmp_path / "s" / "qc.tsv", sep="\t")
    assert qc["subject_id"].tolist() == st.subject_ids
    assert qc["participant_id"].tolist() == ["sub-01"] * 3 + ["sub-02"]


@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(task="rest"), 4),
        (dict(task="task-nback"), 1),
        (dict(session="2"), 1),
        (dict(session="ses-1", task="rest"), 2),
        (dict(run="01"), 2),  # run-01 is run-1
        (dict(run=2), 1),
    ],
)
def test_bids_filters(bids, kw, expected):
    assert len(discover_inputs(bids, **kw)) == expected


def test_a_filter_that_matches_nothing_names_what_exists(bids):
    with pytest.raises(PreprocessError, match=r"no scan has task-motor .*\['nback', 'rest'\]"):
        discover_inputs(bids, task="motor")
    with pytest.raises(PreprocessError, match=r"no scan has ses-3 .*\['\(none\)', '1', '2'\]"):
        discover_inputs(bids, session="3")


def test_sidecar_tr_wins_over_the_header_with_a_warning(bids, tmp_path):
    src = bids / "sub-02" / "func"
    sidecar = next(src.glob("*_bold.json"))
    meta = json.loads(sidecar.read_text())
    d = tmp_path / "in"
    d.mkdir()
    img = next(src.glob("*_bold.nii.gz"))
    (d / img.name).write_bytes(img.read_bytes())  # header TR 1.0 s
    (d / sidecar.name).write_text(json.dumps({**meta, "RepetitionTime": 0.8}))
    report = preprocess(d, tmp_path / "s", config=_cfg(), progress=False)
    assert report.ok and open_store(tmp_path / "s").tr("sub-02") == 0.8
    (warning,) = report.warnings
    assert img.name in warning and "0.8 s from its sidecar" in warning and "1 s in" in warning


def test_runs_of_different_trs_warn_naming_files_and_trs(tmp_path):
    root = make_derivatives(
        tmp_path / "d",
        {
            "03": [
                dict(run="1", num_frames=30, seed=5, tr=1.0),
                dict(run="2", num_frames=30, seed=6, tr=2.0),
            ]
        },
    )
    report = preprocess(root, tmp_path / "s", config=_cfg(), progress=False)
    assert report.ok
    (warning,) = report.warnings
    assert warning.startswith("sub-03: runs at different TRs [1.0, 2.0] s")
    assert "run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz (TR 1 s)" in warning
    assert "run-2_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz (TR 2 s)" in warning
    assert "--target-tr" in warning
    st = open_store(tmp_path / "s")
    assert st.manifest["tr_range"] == [1.0, 2.0]
    # with a target TR: one TR in the store and in its contract, the method recorded
    report = preprocess(root, tmp_path / "t", config=_cfg(target_tr=0.8), progress=False)
    assert report.ok and report.warnings == []
    st = open_store(tmp_path / "t")
    assert [st.tr(s) for s in st.subject_ids] == [0.8, 0.8]
    # 30 frames at 1 s span 29 s → 37 frames at 0.8 s; at 2 s, 58 s → 73 frames
    assert [st.num_frames(s) for s in st.subject_ids] == [37, 73]
    assert st.contract()["tr_range"] == [0.8, 0.8]
    temporal = st.norm_stats("sub-03_task-rest_run-2")["temporal"]
    assert temporal["method"] == METHOD and (temporal["up"], temporal["down"]) == (5, 2)
    assert st.manifest["dataset_info"]["config"]["target_tr"] == 0.8
    # the normalisation still holds after resampling
    data, mask = st.read_subject(st.subject_ids[1]).astype(np.float32), st.mask(st.subject_ids[1])
    assert abs(data[mask].mean()) < 1e-2 and abs(data[mask].std() - 1) < 1e-2
