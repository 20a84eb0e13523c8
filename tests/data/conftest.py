"""Fixtures for the data-loading tests: small stores written directly with ``StoreWriter``.

Axis sizes are distinct (grid (20, 24, 22); 30–50 frames, different per subject) so a
swapped axis fails. Stores are built once per session.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from torch.utils.data import Dataset

GRID = (20, 24, 22)
VOXEL = 8.0
# 12 subjects; frames differ per subject (30..50); sub-0010 has a second session
FRAMES = [30, 31, 33, 35, 37, 40, 42, 44, 45, 47, 50, 36]
LABELS = {"sex": {"task": "classification", "num_classes": 2}, "age": {"task": "regression"}}


class Range(Dataset):
    """A map-style dataset whose item ``i`` is ``i`` (what a sampler hands out, made visible)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def build_store(
    root,
    frames=FRAMES,
    seed=0,
    dataset="synthetic",
    prefix="sub-",
    nan_age=(3,),
    second_session=True,
    grid=GRID,
):
    """Write a store of ``len(frames)`` subjects with random data; return (store, bold by id)."""
    from swiftlib.data.geometry import StoreGeometry
    from swiftlib.data.store import StoreWriter

    rng = np.random.default_rng(seed)
    aff = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    aff[:3, 3] = [-80.0, -112.0, -72.0]
    writer = StoreWriter(
        root, grid=grid, voxel_size=VOXEL, affine=aff, normalisation="zscore_global"
    )
    geom = StoreGeometry.build(grid, VOXEL, aff, source_shape=grid, source_affine=aff)
    mask = np.zeros(grid, dtype=bool)
    mask[3:17, 4:20, 3:19] = True
    rows, bolds = [], {}
    n = len(frames)
    for i, T in enumerate(frames):
        participant = f"{prefix}{i:04d}"
        sid = participant
        if second_session and i == n - 1:  # last scan: second session of participant n-2
            participant = f"{prefix}{n - 2:04d}"
            sid = f"{participant}_ses-2"
        bold = rng.standard_normal((*grid, T)).astype(np.float16)  # (D, H, W, T)
        writer.write_subject(sid, bold, mask, geom, tr=0.8, norm_stats={"mean": 0.0, "std": 1.0})
        bolds[sid] = bold
        rows.append(
            {
                "subject_id": sid,
                "participant_id": participant,
                "dataset": dataset,
                "site": f"site{i % 3}",
                "sex": i % 2,
                "age": np.nan if i in nan_age else 20.0 + i,
            }
        )
    store = writer.finalize(pd.DataFrame(rows), labels=LABELS)
    return store, bolds


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    """(store, {subject_id: bold (D, H, W, T) float16}) — 12 scans of 11 participants."""
    return build_store(tmp_path_factory.mktemp("store_a") / "store")


@pytest.fixture(scope="session")
def other_store(tmp_path_factory):
    """A second cohort (dataset 'other', 4 scans of 30–34 frames) for mixing tests."""
    return build_store(
        tmp_path_factory.mktemp("store_b") / "store",
        frames=[30, 32, 34, 31],
        seed=1,
        dataset="other",
        prefix="sub-o",
        nan_age=(),
        second_session=False,
    )
