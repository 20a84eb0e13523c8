"""WindowDataset: enumeration, values, labels, modes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swiftlib.data.windows import Batch, WindowDataset, collate_samples, window_starts

from .conftest import FRAMES, GRID


def test_window_starts_numbers():
    assert window_starts(30, 20).tolist() == [0]
    assert window_starts(40, 20).tolist() == [0, 20]
    assert window_starts(45, 20, 0.5).tolist() == [0, 10, 20]
    # stride_within 2: a window spans 39 frames; step = round(0.25 * 20 * 2) = 10
    assert window_starts(50, 20, 0.25, 2).tolist() == [0, 10]
    assert window_starts(10, 20).tolist() == []
    assert window_starts(5, 3, 0.01).tolist() == [0, 1, 2]  # step never below one frame


def test_eval_enumerates_every_window_in_order(small_store):
    store, _ = small_store
    ds = WindowDataset(store, sequence_length=20, stride_between_seq=0.5, mode="eval")
    expected = {
        sid: len(window_starts(store.num_frames(sid), 20, 0.5)) for sid in store.subject_ids
    }
    assert ds.windows_by_subject == expected
    # frames 30..50 with step 10: (T - 20) // 10 + 1 windows
    assert sorted(expected.values()) == sorted((t - 20) // 10 + 1 for t in FRAMES)
    assert len(ds) == ds.num_windows == sum(expected.values()) == 31
    idx = ds.index
    assert list(idx.columns) == ["subject_id", "start"]
    assert idx["subject_id"].tolist() == sorted(
        idx["subject_id"].tolist(), key=store.subject_ids.index
    )
    first = idx[idx.subject_id == "sub-0010"]["start"].tolist()
    assert first == [0, 10, 20, 30]  # 50 frames
    for i in (0, 5, len(ds) - 1):
        s = ds[i]
        assert (s.subject_id, s.window_start) == (idx.subject_id[i], idx.start[i])


def test_sample_values_exact(small_store):
    store, bolds = small_store
    ds = WindowDataset(
        store,
        ["sub-0002", "sub-0007"],
        sequence_length=7,
        stride_between_seq=1.0,
        stride_within_seq=3,
        mode="eval",
    )
    s = ds[ds.windows_by_subject["sub-0002"]]  # the first window of sub-0007
    assert s.subject_id == "sub-0007" and s.window_start == 0 and s.dataset == "synthetic"
    assert s.x.shape == (1, *GRID, 7) and s.x.dtype == torch.float32
    ref = bolds["sub-0007"][..., 0:19:3].astype(np.float32)  # (D, H, W, 7)
    assert torch.equal(s.x[0], torch.from_numpy(ref))
    s2 = ds[2]  # sub-0002 (33 frames) has one window; sub-0007 (44) has starts 0, 21
    assert s2.window_start == 21  # step = round(1.0 * 7 * 3)
    half = WindowDataset(store, ["sub-0007"], sequence_length=5, dtype=torch.float16, mode="eval")[
        2
    ]
    assert half.x.dtype == torch.float16
    assert torch.equal(half.x[0], torch.from_numpy(bolds["sub-0007"][..., 10:15]))
    assert torch.isnan(s.y)  # no label requested


def test_labels_and_nan_drop(small_store, caplog):
    store, _ = small_store
    with caplog.at_level("WARNING"):
        ds = WindowDataset(store, label="age", sequence_length=20)
    assert "dropping 1 of 12 subjects" in caplog.text and "sub-0003" in caplog.text
    assert "sub-0003" not in ds.subject_ids and len(ds.subject_ids) == 11
    assert ds.label_task == "regression" and ds.num_classes is None
    s = ds[0]
    assert s.y.dtype == torch.float32 and s.y.item() == 20.0  # sub-0000 age
    cls = WindowDataset(store, ["sub-0000", "sub-0001"], label="sex", sequence_length=20)
    assert cls.label_task == "classification" and cls.num_classes == 2
    ys = {cls[i].subject_id: cls[i].y for i in range(len(cls))}
    assert (
        ys["sub-0000"].dtype == torch.long
        and ys["sub-0000"].item() == 0
        and ys["sub-0001"].item() == 1
    )
    np.testing.assert_array_equal(cls.subject_labels, [0.0, 1.0])


def test_all_labels_missing(small_store):
    store, _ = small_store
    with pytest.raises(ValueError, match="none of the 1 requested subjects has a value"):
        WindowDataset(store, ["sub-0003"], label="age")


def test_unknown_label_lists_valid(small_store):
    store, _ = small_store
    with pytest.raises(
        KeyError, match=r"label 'gender' is not declared.*valid labels: \['age', 'sex'\]"
    ):
        WindowDataset(store, label="gender")


def test_unknown_subject(small_store):
    store, _ = small_store
    with pytest.raises(KeyError, match=r"not in store.*sub-00001.*did you mean"):
        WindowDataset(store, ["sub-0001", "sub-00001"])


def test_too_short_subjects(small_store):
    store, _ = small_store
    with pytest.raises(ValueError) as e:
        WindowDataset(store, sequence_length=32)
    msg = str(e.value)
    assert "sub-0000 (30 frames)" in msg and "sub-0001 (31 frames)" in msg and "sub-0002" not in msg
    assert "2 subject(s)" in msg and "32 = sequence_length 32" in msg
    with pytest.raises(ValueError, match="41 = sequence_length 21 with stride_within_seq 2"):
        WindowDataset(store, ["sub-0005"], sequence_length=21, stride_within_seq=2)


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"mode": "test"}, "mode='test'"),
        ({"sequence_length": 0}, "sequence_length=0"),
        ({"stride_within_seq": 0}, "stride_within_seq=0"),
        ({"stride_between_seq": 0}, "stride_between_seq=0"),
        ({"mode": "eval", "windows_per_subject": 2}, "mode='train' only"),
        ({"windows_per_subject": 0}, "windows_per_subject=0"),
        ({"mode": "eval", "augment": lambda x: x}, "augmentation is never applied"),
    ],
)
def test_argument_errors(small_store, kw, fragment):
    store, _ = small_store
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        WindowDataset(store, **kw)


def test_index_out_of_range(small_store):
    store, _ = small_store
    ds = WindowDataset(store, ["sub-0000"], sequence_length=20)
    assert len(ds) == 1 and ds[-1].window_start == 0
    with pytest.raises(IndexError, match="out of range for a dataset of 1 windows"):
        ds[1]


def test_windows_per_subject_random_starts(small_store):
    store, _ = small_store
    ids = ["sub-0000", "sub-0010"]
    ds = WindowDataset(store, ids, sequence_length=5, stride_between_seq=0.2, windows_per_subject=3)
    assert len(ds) == 6
    torch.manual_seed(0)
    first = [(ds[i].subject_id, ds[i].window_start) for i in range(6)]
    assert [s for s, _ in first] == ["sub-0000"] * 3 + ["sub-0010"] * 3
    assert all(0 <= st <= 30 - 5 for s, st in first if s == "sub-0000")
    assert all(0 <= st <= 50 - 5 for s, st in first if s == "sub-0010")
    torch.manual_seed(0)
    assert [(ds[i].subject_id, ds[i].window_start) for i in range(6)] == first  # seeded
    torch.manual_seed(1)
    starts = {ds[i].window_start for _ in range(5) for i in range(3, 6)}
    assert len(starts) > 3  # genuinely random over epochs


def test_transform_in_both_modes(small_store):
    store, _ = small_store
    for mode in ("train", "eval"):
        ds = WindowDataset(
            store, ["sub-0000"], sequence_length=20, mode=mode, transform=lambda x: x * 0 + 1
        )
        assert torch.all(ds[0].x == 1)


def test_collate_and_loader(small_store):
    store, _ = small_store
    ds = WindowDataset(
        store, ["sub-0000", "sub-0001"], label="sex", sequence_length=20, mode="eval"
    )
    batch = collate_samples([ds[0], ds[1]])
    assert isinstance(batch, Batch)
    assert batch.x.shape == (2, 1, *GRID, 20) and batch.y.tolist() == [0, 1]
    assert batch.subject_id == ["sub-0000", "sub-0001"] and batch.window_start.tolist() == [0, 0]
    assert batch.dataset == ["synthetic", "synthetic"]
    with pytest.raises(ValueError, match="empty list"):
        collate_samples([])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_samples)
    (only,) = list(loader)
    assert torch.equal(only.x, batch.x)


def test_empty_subject_list(small_store, caplog):
    store, _ = small_store
    with caplog.at_level("WARNING"):
        ds = WindowDataset(store, [], sequence_length=20, mode="eval")
    assert len(ds) == 0 and "no subjects" in caplog.text and len(ds.index) == 0


@pytest.fixture(scope="module")
def brain_store(tmp_path_factory):
    """Three subjects as preprocessing writes them: noise inside an ellipsoid mask (a different
    one per subject), one background value outside; a fourth with a noisy background."""
    import pandas as pd

    from swiftlib.data.geometry import StoreGeometry
    from swiftlib.data.store import StoreWriter

    root = tmp_path_factory.mktemp("brain") / "store"
    aff = np.diag([8.0, 8.0, 8.0, 1.0])
    writer = StoreWriter(root, grid=GRID, voxel_size=8.0, affine=aff)
    geom = StoreGeometry.build(GRID, 8.0, aff, source_shape=GRID, source_affine=aff)
    rng = np.random.default_rng(7)
    z, y, x = np.ogrid[: GRID[0], : GRID[1], : GRID[2]]
    bolds = {}
    for i, T in enumerate((26, 31, 29, 27)):
        r = 0.6 + 0.1 * i
        mask = ((z - 10) / (r * 10)) ** 2 + ((y - 12) / (r * 12)) ** 2 + ((x - 11) / (r * 11)) ** 2
        mask = mask <= 1
        bold = np.full((*GRID, T), -1.75 - 0.25 * i, np.float16)
        if i == 3:
            bold = rng.standard_normal((*GRID, T)).astype(np.float16)
        bold[mask] = rng.standard_normal((int(mask.sum()), T))
        sid = f"sub-{i:02d}"
        writer.write_subject(sid, bold, mask, geom, tr=0.8, norm_stats={})
        bolds[sid] = bold
    store = writer.finalize(
        pd.DataFrame({"subject_id": list(bolds), "sex": [0, 1, 0, 1]}),
        labels={"sex": {"task": "classification", "num_classes": 2}},
    )
    return store, bolds


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_packed_windows_equal_dense_windows_through_a_two_worker_loader(brain_store, dtype):
    from swiftlib.data.windows import PackedBatch, PackedWindow, unpack_batch

    store, bolds = brain_store
    kw = dict(sequence_length=7, stride_within_seq=2, stride_between_seq=0.5, label="sex")
    dense = WindowDataset(store, mode="eval", dtype=dtype, **kw)
    packed = WindowDataset(store, mode="eval", dtype=dtype, packed=True, **kw)
    w = packed[0].x
    assert isinstance(w, PackedWindow) and w.values.dtype == torch.float16
    assert w.values.shape == (
        7,
        int((bolds["sub-00"][..., 0] != bolds["sub-00"][0, 0, 0, 0]).sum()),
    )
    order = torch.randperm(len(dense), generator=torch.Generator().manual_seed(0)).tolist()

    def loader(ds):
        return torch.utils.data.DataLoader(
            ds, batch_size=3, sampler=order, num_workers=2, collate_fn=collate_samples
        )

    sent = 0
    for a, b in zip(loader(dense), loader(packed), strict=True):
        assert isinstance(b.x, PackedBatch) and b.x.counts.shape == (len(a.subject_id),)
        sent += b.x.values.numel() / a.x.numel()
        u = unpack_batch(b, dtype)
        assert u.x.dtype == dtype and u.x.shape == a.x.shape
        assert torch.equal(u.x, a.x) and torch.equal(u.y, a.y)
        assert u.subject_id == a.subject_id and torch.equal(u.window_start, a.window_start)
    # three brain subjects move 24-43 % of the grid's values; the noisy-background one all
    assert sent / len(loader(dense)) < 0.75
    assert unpack_batch(a, dtype) is a  # a dense batch comes back as it is
    sid, start = "sub-03", 4
    x = unpack_batch(collate_samples([packed.read(3, start)]), torch.float16).x[0, 0]
    assert torch.equal(x, torch.from_numpy(bolds[sid][..., start : start + 13 : 2]))


def test_packed_windows_refuse_transforms_and_mixed_batches(brain_store):
    store, _ = brain_store
    with pytest.raises(ValueError, match="packed=True with a transform or augment"):
        WindowDataset(store, sequence_length=5, packed=True, augment=lambda x: x)
    dense = WindowDataset(store, sequence_length=5, mode="eval")
    packed = WindowDataset(store, sequence_length=5, mode="eval", packed=True)
    with pytest.raises(ValueError, match="1 of 2 samples are packed"):
        collate_samples([dense[0], packed[0]])
    short = WindowDataset(store, sequence_length=4, mode="eval", packed=True)
    with pytest.raises(ValueError, match=r"packed windows of \[4, 5\] frames"):
        collate_samples([short[0], packed[0]])
