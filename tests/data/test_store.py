import json
import os
import pickle
import time

import numpy as np
import pandas as pd
import pytest

from swiftlib.data import integrity
from swiftlib.data import store as store_module
from swiftlib.data.geometry import StoreGeometry, store_affine
from swiftlib.data.store import (
    VERIFIED_CACHE,
    CorruptSubjectError,
    StoreError,
    StoreReadError,
    StoreWriter,
    chunk_frames_for,
    open_store,
)

GRID = (20, 24, 22)
VS = 8.0


def _writer(root, **kw):
    return StoreWriter(root, GRID, VS, store_affine(GRID, VS, (0, -17, 5)), **kw)


def _geom():
    aff = store_affine(GRID, VS, (0, -17, 5))
    return StoreGeometry.build(GRID, VS, aff, GRID, aff)


def _write(root, n=3, frames=(30, 41, 35)):
    rng = np.random.default_rng(0)
    w = _writer(root)
    data = {}
    for i in range(n):
        sid = f"sub-{i:02d}"
        bold = rng.standard_normal(GRID + (frames[i % len(frames)],)).astype(np.float32)
        mask = rng.random(GRID) > 0.3
        w.write_subject(
            sid, bold, mask, _geom(), tr=0.72 + 0.1 * i, norm_stats={"mean": float(i), "std": 2.0}
        )
        data[sid] = (bold, mask)
    table = pd.DataFrame(
        {
            "subject_id": list(data),
            "site": ["a", "b", "a"][:n],
            "sex": [0, 1, 0][:n],
            "age": [50.5, 61.0, 70.25][:n],
        }
    )
    store = w.finalize(
        table,
        labels={"sex": {"task": "classification", "num_classes": 2}, "age": {"task": "regression"}},
    )
    return store, data


def test_round_trip_is_exact_in_fp16(tmp_path):
    store, data = _write(tmp_path / "s")
    assert store.subject_ids == ["sub-00", "sub-01", "sub-02"]
    for sid, (bold, mask) in data.items():
        got = store.read_subject(sid)
        assert got.dtype == np.float16 and got.shape == bold.shape
        assert np.array_equal(got, bold.astype(np.float16))
        assert np.array_equal(store.mask(sid), mask)
    win = store.read_window("sub-01", start=5, length=7, stride=3)
    assert win.shape == GRID + (7,)
    assert np.array_equal(win, data["sub-01"][0][..., 5:26:3].astype(np.float16))
    assert store.num_frames("sub-01") == 41 and store.tr("sub-01") == pytest.approx(0.82)
    assert store.norm_stats("sub-02") == {"mean": 2.0, "std": 2.0}
    assert store.geometry("sub-00") == _geom()
    assert store.labels["age"] == {"task": "regression"}
    assert (
        store.subjects.loc["sub-01", "site"] == "b" and store.subjects.loc["sub-02", "age"] == 70.25
    )
    assert store.contract() == {
        "grid": list(GRID),
        "voxel_size": VS,
        "space": "MNI152",
        "layout": "mni_ras",
        "template": "unknown",
        "normalisation": "zscore_global",
        "tr_range": [0.72, pytest.approx(0.92)],
        "denoise": "none",
    }


def _brain_like(T=17, seed=3):
    """A normalised subject as preprocessing writes it: noise in a mask, one background value."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: GRID[0], : GRID[1], : GRID[2]]
    mask = ((z - 10) / 8.0) ** 2 + ((y - 12) / 10.0) ** 2 + ((x - 11) / 9.0) ** 2 <= 1
    bold = np.full(GRID + (T,), -2.5, np.float32)
    bold[mask] = rng.standard_normal((int(mask.sum()), T))
    return bold, mask


def test_a_window_is_one_contiguous_slice_of_the_brain_voxels(tmp_path):
    import h5py

    bold, mask = _brain_like()
    w = _writer(tmp_path / "s")
    w.write_subject("sub-00", bold, mask, _geom(), tr=1.0, norm_stats={})
    store = w.finalize(pd.DataFrame({"subject_id": ["sub-00"]}))
    with h5py.File(store.path("sub-00")) as f:
        d = f["bold_packed"]
        assert d.shape == (17, int(mask.sum())) and d.chunks is None and d.compression is None
        assert f.attrs["format_version"] == 2 and "bold" not in f
    packed = store.read_window_packed("sub-00", 3, 5, stride=2)
    assert packed.values.shape == (5, mask.sum()) and packed.values.flags.c_contiguous
    assert np.array_equal(packed.voxels, np.flatnonzero(mask))
    assert np.array_equal(packed.values, bold[mask][:, 3:12:2].T.astype(np.float16))
    assert np.all(packed.background == np.float16(-2.5))
    buf = np.zeros((5, int(mask.sum())), np.float16)
    assert store.read_window_packed("sub-00", 3, 5, 2, out=buf).values is buf
    assert np.array_equal(buf, packed.values)
    with pytest.raises(ValueError, match=r"out: float32 .*expected a C-contiguous float16"):
        store.read_window_packed("sub-00", 3, 5, 2, out=buf.astype(np.float32))
    assert np.array_equal(store.stored_voxels("sub-00"), np.flatnonzero(mask))
    assert np.array_equal(store.read_window("sub-00", 3, 5, 2), bold[..., 3:12:2].astype("f2"))
    assert np.array_equal(store.read_subject("sub-00"), bold.astype(np.float16))
    # the stored bytes are the brain's: 29 % of the grid here
    assert store.path("sub-00").stat().st_size < 0.35 * bold.size * 2
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["format_version"] == 2


def test_voxels_off_the_background_outside_the_mask_are_kept_exactly():
    bold, mask = _brain_like(T=6)
    bold[0, 0, 0, 4] = 7.0  # outside the mask, not the background in one frame
    bold[..., 2][~mask] = 1.5  # another frame, another background
    b16 = bold.astype(np.float16)
    voxels, bg = store_module.packed_voxels(b16, mask)
    assert np.array_equal(voxels, np.union1d(np.flatnonzero(mask), [0]))
    assert bg.tolist() == [-2.5, -2.5, 1.5, -2.5, -2.5, -2.5]
    values = b16.reshape(-1, 6)[voxels].T  # (T, V)
    assert np.array_equal(store_module.scatter_frames(values, voxels, bg, GRID), b16)
    assert np.array_equal(
        store_module.packed_voxels(b16, np.ones(GRID, bool))[0], np.arange(b16[..., 0].size)
    )


def test_format_1_files_stay_readable(tmp_path):
    """Files written before format 2 (dense (D, H, W, T), chunks of whole volumes, Blosc-LZ4)
    read back exactly, through every read path."""
    import h5py

    bold, mask = _brain_like()
    w = _writer(tmp_path / "s")
    w.format_version = 1
    w.write_subject("sub-00", bold, mask, _geom(), tr=1.0, norm_stats={})
    store = w.finalize(pd.DataFrame({"subject_id": ["sub-00"]}))
    with h5py.File(store.path("sub-00")) as f:
        chunks = f["bold"].chunks
        assert f.attrs["format_version"] == 1 and "bold_packed" not in f
    assert chunks[:3] == GRID and chunks[3] == chunk_frames_for(GRID, 17) == 17
    assert chunk_frames_for((96, 96, 96), 1200) == 4  # ~8 MB chunks at the real grid
    b16 = bold.astype(np.float16)
    assert np.array_equal(store.read_subject("sub-00"), b16)
    assert np.array_equal(store.read_window("sub-00", 3, 5, 2), b16[..., 3:12:2])
    packed = store.read_window_packed("sub-00", 3, 5, 2)  # every voxel
    assert packed.values.shape == (5, b16[..., 0].size)
    assert np.array_equal(store_module.scatter_frames(*packed, GRID), b16[..., 3:12:2])


def test_window_out_of_range_and_unknown_subject(tmp_path):
    store, _ = _write(tmp_path / "s")
    with pytest.raises(IndexError, match=r"frames \[25, 45\); the subject has 41 frames"):
        store.read_window("sub-01", 25, 20)
    with pytest.raises(KeyError, match="did you mean"):
        store.num_frames("sub-1")


def test_store_pickles_without_open_handles(tmp_path):
    store, data = _write(tmp_path / "s")
    store.read_window("sub-00", 0, 2)
    clone = pickle.loads(pickle.dumps(store))
    assert clone._handles == {}
    assert np.array_equal(
        clone.read_window("sub-00", 0, 2), data["sub-00"][0][..., :2].astype(np.float16)
    )


def test_failed_write_leaves_nothing(tmp_path):
    w = _writer(tmp_path / "s")
    with pytest.raises(TypeError):  # json.dumps fails mid-write, after the bold dataset was written
        w.write_subject(
            "sub-00",
            np.zeros(GRID + (4,), np.float32),
            np.ones(GRID, bool),
            _geom(),
            1.0,
            norm_stats={"x": object()},
        )
    assert list((tmp_path / "s" / "subjects").iterdir()) == []
    assert w.completed() == {}


def test_journal_resume_detects_changed_files(tmp_path):
    store, _ = _write(tmp_path / "s")
    w = _writer(tmp_path / "s")
    assert sorted(w.completed()) == ["sub-00", "sub-01", "sub-02"]
    p = store.path("sub-01")
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF  # same size, different content
    p.write_bytes(bytes(raw))
    assert sorted(w.completed(verify=True)) == ["sub-00", "sub-02"]
    assert sorted(w.completed(verify=False)) == ["sub-00", "sub-01", "sub-02"]
    with pytest.raises(StoreError, match="corrupt.*sub-01"):
        open_store(tmp_path / "s", verify="checksum")
    open_store(tmp_path / "s", verify="size")  # size unchanged: the fast check passes


def test_open_store_names_missing_and_truncated_subjects(tmp_path):
    store, _ = _write(tmp_path / "s")
    store.path("sub-00").unlink()
    p = store.path("sub-02")
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(StoreError, match=r"missing: sub-00; corrupt .*: sub-02"):
        open_store(tmp_path / "s")
    assert len(open_store(tmp_path / "s", verify="none")) == 3


def test_open_store_rejects_non_stores(tmp_path):
    with pytest.raises(StoreError, match="no manifest.json"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="format='other'"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "swiftlib-store", "format_version": 99})
    )
    with pytest.raises(StoreError, match="newer"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "swiftlib-store", "format_version": 1})
    )
    with pytest.raises(StoreError, match="subjects.csv is missing"):
        open_store(tmp_path)
    with pytest.raises(ValueError, match="verify='fast'"):
        open_store(tmp_path, verify="fast")


def test_writer_validation(tmp_path):
    with pytest.raises(StoreError, match="normalisation='robust'"):
        _writer(tmp_path, normalisation="robust")
    with pytest.raises(StoreError, match=r"grid=\(20, 24\)"):
        StoreWriter(tmp_path, (20, 24), VS, np.eye(4))
    w = _writer(tmp_path / "s")
    with pytest.raises(
        StoreError, match=r"bold shape \(20, 24, 21, 5\); expected \(20, 24, 22, T\)"
    ):
        w.write_subject("sub-00", np.zeros((20, 24, 21, 5)), np.ones(GRID, bool), _geom(), 1.0, {})
    with pytest.raises(StoreError, match="mask shape"):
        w.write_subject(
            "sub-00", np.zeros(GRID + (5,)), np.ones((20, 24, 21), bool), _geom(), 1.0, {}
        )
    with pytest.raises(StoreError, match="cannot be used as a file name"):
        w.write_subject("../evil", np.zeros(GRID + (5,)), np.ones(GRID, bool), _geom(), 1.0, {})
    with pytest.raises(StoreError, match="no subject was written"):
        w.finalize(pd.DataFrame({"subject_id": ["sub-00"]}))


def test_finalize_validation(tmp_path):
    _write(tmp_path / "s")
    w = _writer(tmp_path / "s")
    with pytest.raises(StoreError, match="expected a 'subject_id' column"):
        w.finalize(pd.DataFrame({"eid": ["sub-00"]}))
    with pytest.raises(StoreError, match="task='ordinal'"):
        w.finalize(pd.DataFrame({"subject_id": ["sub-00"]}), labels={"x": {"task": "ordinal"}})
    with pytest.raises(StoreError, match=r"labels \['iq'\] are declared but not columns"):
        w.finalize(pd.DataFrame({"subject_id": ["sub-00"]}), labels={"iq": {"task": "regression"}})


def test_duplicated_row_in_subjects_csv_names_file_subject_and_lines(tmp_path):
    _write(tmp_path / "s")
    csv = tmp_path / "s" / "subjects.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, lines[2]]) + "\n")  # sub-01 again, as line 5
    with pytest.raises(StoreError) as e:
        open_store(tmp_path / "s")
    msg = str(e.value)
    assert str(csv) in msg and "'sub-01' on lines 3, 5" in msg and "one row per subject" in msg


def test_text_in_a_label_column_names_column_subject_and_value(tmp_path):
    _write(tmp_path / "s")
    csv = tmp_path / "s" / "subjects.csv"
    table = pd.read_csv(csv, dtype=str)
    table.loc[1, "age"] = "old"
    table.to_csv(csv, index=False)
    with pytest.raises(StoreError, match=r"label column 'age' \(regression\).*sub-01 = 'old'"):
        open_store(tmp_path / "s")
    table.loc[1, "age"] = "61"
    table.loc[2, "sex"] = "2"  # class 2 of a 2-class label
    table.to_csv(csv, index=False)
    with pytest.raises(StoreError, match=r"'sex'.*integer classes 0..1: sub-02 = 2 \(line 4\)"):
        open_store(tmp_path / "s")
    table.loc[2, "sex"] = None  # a missing value is allowed
    table.to_csv(csv, index=False)
    store = open_store(tmp_path / "s")
    assert store.subjects["age"].dtype == float and np.isnan(store.subjects.loc["sub-02", "sex"])


def test_finalize_refuses_repeated_subjects_and_text_labels(tmp_path):
    _write(tmp_path / "s")
    w = _writer(tmp_path / "s")
    with pytest.raises(StoreError, match=r"'sub-01' on rows 1, 2"):
        w.finalize(pd.DataFrame({"subject_id": ["sub-00", "sub-01", "sub-01"]}))
    with pytest.raises(StoreError, match=r"'age'.*sub-00 = 'old' \(row 0\)"):
        w.finalize(
            pd.DataFrame({"subject_id": ["sub-00"], "age": ["old"]}),
            labels={"age": {"task": "regression"}},
        )


def _flip(path, offset, n=64):
    """Flip ``n`` bytes of ``path`` from ``offset`` (same size, different content)."""
    raw = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_bytes_are_refused_when_a_subject_is_first_read(tmp_path):
    store, data = _write(tmp_path / "s")
    p = store.path("sub-01")
    good = store.manifest["subjects"]["sub-01"]["sha256"]
    _flip(p, p.stat().st_size // 2)
    store = open_store(tmp_path / "s")  # the size check passes: same size
    expected = data["sub-00"][0][..., :2].astype(np.float16)
    assert np.array_equal(store.read_window("sub-00", 0, 2), expected)
    with pytest.raises(CorruptSubjectError) as e:
        store.read_window("sub-01", 0, 2)
    msg = str(e.value)
    actual = integrity.sha256_file(p)
    assert "subject sub-01" in msg and str(p) in msg
    assert good in msg and actual in msg and actual != good
    assert "swiftlib preprocess" in msg  # the fix
    with pytest.raises(CorruptSubjectError, match="sub-01"):  # every read path, every time
        store.mask("sub-01")
    with pytest.raises(CorruptSubjectError, match="sub-01"):
        open_store(tmp_path / "s", verify="checksum")


def test_an_edited_manifest_checksum_is_detected(tmp_path):
    _write(tmp_path / "s")
    mpath = tmp_path / "s" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["subjects"]["sub-02"]["sha256"] = "0" * 64
    mpath.write_text(json.dumps(manifest))
    store = open_store(tmp_path / "s")
    store.read_subject("sub-00")  # verified (and cached) before the edit: still fine
    with pytest.raises(CorruptSubjectError, match=r"sub-02.*records 0{64}"):
        store.read_subject("sub-02")


def test_read_errors_name_the_subject_and_the_file(tmp_path):
    store, _ = _write(tmp_path / "s")
    p = store.path("sub-01")
    raw = bytearray(p.read_bytes())
    half = len(raw) // 2
    raw[half:] = np.random.default_rng(0).integers(0, 256, len(raw) - half, np.uint8).tobytes()
    p.write_bytes(bytes(raw))
    store = open_store(tmp_path / "s", verify_on_read=False)  # the h5py error itself
    for read in (
        lambda: store.read_subject("sub-01"),
        lambda: store.read_window("sub-01", 20, 5),
    ):
        with pytest.raises(StoreReadError) as e:
            read()
        assert "subject sub-01" in str(e.value) and str(p) in str(e.value)
    q = store.path("sub-02")
    q.write_bytes(np.random.default_rng(1).integers(0, 256, q.stat().st_size, np.uint8).tobytes())
    for read in (lambda: store.mask("sub-02"), lambda: store.geometry("sub-02")):
        with pytest.raises(StoreReadError, match=rf"subject sub-02: cannot read .* {q}"):
            read()


def test_checksums_cost_one_hash_per_file_version(tmp_path, monkeypatch):
    store, _ = _write(tmp_path / "s")
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p) or real(p))
    monkeypatch.setattr(integrity, "_HASHES", {})
    old = time.time() - 3600  # older than the racy window: recorded in the cache file
    for sid in store.subject_ids:
        os.utime(store.path(sid), (old, old))
    store = open_store(tmp_path / "s")
    assert store.verify_subjects()["hashed"] == 3
    assert store.verify_subjects()["hashed"] == 0  # in this store object
    store.read_window("sub-00", 0, 2)
    assert len(hashed) == 3
    clone = pickle.loads(pickle.dumps(store))  # what a DataLoader worker receives
    monkeypatch.setattr(integrity, "_HASHES", {})
    assert clone.verify_subjects()["hashed"] == 0
    cache = json.loads((tmp_path / "s" / VERIFIED_CACHE).read_text())
    assert sorted(cache["files"]) == [f"subjects/sub-0{i}.h5" for i in range(3)]
    assert open_store(tmp_path / "s").verify_subjects()["hashed"] == 0  # a new run: the file
    p = store.path("sub-01")
    _flip(p, 4096)
    os.utime(p, (old + 1, old + 1))  # a new version (even with an old mtime)
    with pytest.raises(CorruptSubjectError, match="sub-01"):
        open_store(tmp_path / "s").verify_subjects()
    assert len(hashed) == 4


def test_a_fresh_file_is_not_recorded_in_the_cache_file(tmp_path):
    store, _ = _write(tmp_path / "s")  # just written: a same-size rewrite could keep its mtime
    assert store.verify_subjects()["subjects"] == 3
    assert not (tmp_path / "s" / VERIFIED_CACHE).exists()


def test_a_read_only_store_is_verified_without_a_cache_file(tmp_path, monkeypatch):
    store, _ = _write(tmp_path / "s")
    old = time.time() - 3600
    for sid in store.subject_ids:
        os.utime(store.path(sid), (old, old))
    monkeypatch.setattr(integrity.os, "access", lambda path, mode: False)
    assert open_store(tmp_path / "s").verify_subjects()["subjects"] == 3
    assert not (tmp_path / "s" / VERIFIED_CACHE).exists()


def test_a_truncated_packed_file_is_refused_naming_the_subject(tmp_path):
    bold, mask = _brain_like()
    w = _writer(tmp_path / "s")
    w.write_subject("sub-00", bold, mask, _geom(), tr=1.0, norm_stats={})
    store = w.finalize(pd.DataFrame({"subject_id": ["sub-00"]}))
    p = store.path("sub-00")
    with h5py_file(p) as f:
        end = f["bold_packed"].id.get_offset() + f["bold_packed"].id.get_storage_size()
    with open(p, "r+b") as f:  # cut into the packed values and all that follows them
        f.truncate(end - 100)
    store = open_store(tmp_path / "s", verify="none", verify_on_read=False)
    with pytest.raises(StoreReadError, match=rf"subject sub-00: cannot read .* {p}"):
        store.read_window("sub-00", 0, 4)


def h5py_file(path):
    import h5py

    return h5py.File(path, "r")


def test_window_reads_keep_one_open_file_per_subject(tmp_path):
    bold, mask = _brain_like()
    w = _writer(tmp_path / "s")
    for sid in ("sub-00", "sub-01"):
        w.write_subject(sid, bold, mask, _geom(), tr=1.0, norm_stats={})
    store = w.finalize(pd.DataFrame({"subject_id": ["sub-00", "sub-01"]}))
    fds = len(os.listdir("/proc/self/fd"))
    for sid in store.subject_ids:
        for start in range(0, 10, 3):
            store.read_window_packed(sid, start, 4)
    assert len(os.listdir("/proc/self/fd")) - fds == 2  # the two maps' descriptors
    assert store.geometry("sub-00") == _geom()  # the HDF5 file opens again when needed
    assert np.array_equal(store.read_window("sub-00", 2, 3), bold[..., 2:5].astype(np.float16))
    store.close()
    assert len(os.listdir("/proc/self/fd")) == fds
