"""Atomic writes honour the umask (issue 14.8): a store or run in a shared project directory
is readable by collaborators when the user's umask says so."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest

from swiftlib.utils.io import atomic_path, atomic_write_json, atomic_write_text, current_umask


@pytest.fixture
def umask():
    """Set the process umask for one test; the old one is restored after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "results.json", {"status": "ok"})
    with atomic_path(tmp_path / "b.bin", suffix=".bin.tmp") as tmp:
        tmp.write_bytes(b"\0" * 8)
    for name in ("a.txt", "results.json", "b.bin"):
        assert _mode(tmp_path / name) == expected, name


def test_atomic_write_failure_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_store_files_and_results_honour_the_umask(tmp_path, umask, mask, expected):
    from swiftlib.data.geometry import StoreGeometry, store_affine
    from swiftlib.data.store import StoreWriter
    from swiftlib.results import save_results

    umask(mask)
    grid, vs = (6, 7, 5), 8.0
    aff = store_affine(grid, vs, (0, 0, 0))
    w = StoreWriter(tmp_path / "store", grid, vs, aff)
    bold = np.zeros((*grid, 4), dtype=np.float32)
    geom = StoreGeometry.build(grid, vs, aff, grid, aff)
    w.write_subject("sub-01", bold, np.ones(grid, bool), geom, tr=1.0, norm_stats={})
    w.finalize(pd.DataFrame({"subject_id": ["sub-01"]}))
    save_results(tmp_path / "run", "data", metrics={"test/x": 1.0})
    for rel in ("subjects/sub-01.h5", "manifest.json", "subjects.csv"):
        assert _mode(tmp_path / "store" / rel) == expected, rel
    assert _mode(tmp_path / "run" / "results.json") == expected
