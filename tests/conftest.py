"""Shared fixtures: a small synthetic cohort with distinct axis sizes (built once per session)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

# 8 mm keeps the cohort tiny; (20, 24, 22) gives a distinct size on every axis.
SYNTH_KW = dict(num_subjects=12, seed=3, voxel_size=8.0, grid=(20, 24, 22), num_frames=40, tr=1.0)


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory):
    """``(store, export_dir, config)``: 12 subjects at 8 mm, 40 frames, 4 exported as NIfTI."""
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = tmp_path_factory.mktemp("synth")
    cfg = SyntheticConfig(**SYNTH_KW)
    store = make_synthetic_cohort(root / "store", config=cfg, export_nifti=root / "bids", export_subjects=4,
                                  progress=False)
    return store, root / "bids", cfg


@pytest.fixture(scope="session")
def synth_store(synth_cohort):
    return synth_cohort[0]
