"""PairDataset: two windows of one subject per item, seeded by (seed, epoch, index),
evaluation pairs interleaved over subjects, exact mid-epoch resume through ResumableLoader."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import ConcatDataset

from swiftlib.data.datamodule import DataConfig, FMRIDataModule
from swiftlib.data.loader import EpochShuffleSampler, ResumableLoader
from swiftlib.data.mixing import MixedWindowDataset, MixingSampler
from swiftlib.data.pairs import EpochKeyedSampler, PairDataset, collate_pairs, partner_starts
from swiftlib.data.windows import WindowDataset
from tests.data.conftest import GRID

L = 8  # frames per window


def _windows(store, mode="train", **kw):
    return WindowDataset(store, sequence_length=L, mode=mode, **kw)


def test_partner_starts_leave_out_overlapping_windows():
    assert partner_starts(30, 8, 10, 8).tolist() == [0, 1, 2, 18, 19, 20, 21, 22]
    # 0: any start, the same one included
    assert partner_starts(30, 8, 10, 0).tolist() == list(range(23))
    assert partner_starts(7, 8, 0, 0).tolist() == []  # no room for a window


def test_training_pairs_are_one_subject_apart_in_time_and_keyed_by_epoch(small_store):
    store, bolds = small_store
    ds = PairDataset(_windows(store), seed=5)
    assert len(ds) == len(ds.dataset) and ds.mode == "train"
    for i in (0, 7, len(ds) - 1):
        s = ds[(i, 0)]
        a, b = s.starts
        assert s.x1.shape == s.x2.shape == (1, *GRID, L)
        assert abs(a - b) >= L  # default separation: a window's span, no shared frame
        # both windows are the subject's frames (a plain window read, no augmentation here)
        torch.testing.assert_close(
            s.x1[0], torch.from_numpy(bolds[s.subject_id][..., a : a + L]).float()
        )
        torch.testing.assert_close(
            s.x2[0], torch.from_numpy(bolds[s.subject_id][..., b : b + L]).float()
        )
        sid, start = ds.dataset.locate(i)
        # the first window is window i
        assert (ds.dataset.subject_ids[sid], start) == (s.subject_id, a)
    same = [ds[(i, 3)].starts for i in range(10)]
    assert same == [ds[(i, 3)].starts for i in range(10)]  # a function of (seed, epoch, index)
    assert same != [ds[(i, 4)].starts for i in range(10)]  # another epoch, other partners
    assert [PairDataset(_windows(store), seed=6)[(i, 3)].starts for i in range(10)] != same
    assert ds[2].starts == ds[(2, 0)].starts  # a bare index is epoch 0


def test_windows_per_subject_draws_come_from_the_key_too(small_store):
    store, _ = small_store
    ds = PairDataset(_windows(store, windows_per_subject=2), seed=1)
    torch.manual_seed(0)
    first = [ds[(i, 1)].starts for i in range(len(ds))]
    torch.manual_seed(123)  # the global RNG plays no part
    assert [ds[(i, 1)].starts for i in range(len(ds))] == first


def test_evaluation_pairs_are_fixed_and_interleave_subjects(small_store):
    store, _ = small_store
    ids = store.subject_ids[:5]
    ds = PairDataset(
        _windows(store, mode="eval", subject_ids=ids), pairs_per_subject=3, min_separation=4
    )
    assert len(ds) == 15 and ds.num_subjects == 5
    items = [ds[i] for i in range(len(ds))]
    assert [s.subject_id for s in items[:5]] == ids  # item i is subject i mod S
    assert [s.subject_id for s in items[5:10]] == ids
    assert all(abs(a - b) >= 4 for a, b in (s.starts for s in items))
    assert [s.starts for s in items] == [ds[i].starts for i in range(len(ds))]  # fixed
    anchors = {s.starts[0] for s in items}
    assert anchors <= {0, 8, 16, 24, 32, 40}  # first windows on the evaluation stride grid


def test_mixed_stores_are_paired_within_their_store(small_store, other_store):
    mixed = MixedWindowDataset({"a": _windows(small_store[0]), "b": _windows(other_store[0])})
    ds = PairDataset(mixed, seed=2)
    assert len(ds) == len(mixed)
    other_ids = set(other_store[0].subject_ids)
    tail = ds[(len(ds) - 1, 0)]
    assert tail.subject_id in other_ids and tail.dataset == "other"
    # the loader takes (index, epoch) keys from a mixing sampler
    sampler = EpochKeyedSampler(MixingSampler(mixed, num_samples=12, seed=3))
    batch = next(
        iter(
            torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_pairs)
        )
    )
    assert batch.x1.shape == batch.x2.shape == (4, 1, *GRID, L) and batch.window_start.shape == (
        4,
        2,
    )
    eval_ds = PairDataset(
        ConcatDataset(
            [_windows(small_store[0], mode="eval"), _windows(other_store[0], mode="eval")]
        ),
        pairs_per_subject=1,
    )
    assert eval_ds.num_subjects == 16 and len(eval_ds) == 16


def test_scans_too_short_for_two_windows_are_named(small_store):
    store, _ = small_store
    with pytest.raises(
        ValueError, match=r"too short for two windows 16 frames apart .* sub-0000 \(30 frames\)"
    ):
        # 30 frames, window 8: start 8 has no partner 16 away
        PairDataset(_windows(store), min_separation=16)
    with pytest.raises(ValueError, match="0 lets the two windows overlap"):
        PairDataset(WindowDataset(store, sequence_length=20, mode="train"))
    PairDataset(WindowDataset(store, sequence_length=20, mode="train"), min_separation=0)
    with pytest.raises(ValueError, match="mix modes"):
        PairDataset(ConcatDataset([_windows(store), _windows(store, mode="eval")]))
    with pytest.raises(TypeError, match="wraps WindowDatasets"):
        PairDataset(torch.utils.data.TensorDataset(torch.zeros(3)))


def test_keyed_loader_resumes_mid_epoch_with_the_same_pairs(small_store):
    store, _ = small_store
    ds = PairDataset(_windows(store), seed=4)

    def loader():
        sampler = EpochKeyedSampler(EpochShuffleSampler(len(ds), seed=9))
        return ResumableLoader(
            ds, batch_size=5, sampler=sampler, collate_fn=collate_pairs, drop_last=True
        )

    def key(b):
        return list(zip(b.subject_id, b.window_start.tolist()))

    first = loader()
    first.sampler.set_epoch(2)
    full = [key(b) for b in first]
    first.sampler.set_epoch(2)
    it = iter(first)
    taken = [key(next(it)) for _ in range(3)]
    state = first.state_dict()
    resumed = loader()
    # what Lightning does: epoch and position, no set_epoch call first
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    assert taken + [key(b) for b in resumed] == full
    with pytest.raises(TypeError, match="wraps a ResumableSampler"):
        EpochKeyedSampler(list(range(4)))


def test_datamodule_builds_pair_loaders(small_store, tmp_path):
    store, _ = small_store
    cfg = DataConfig(
        store_path=str(store.root),
        sequence_length=L,
        batch_size=4,
        num_workers=0,
        pairs=True,
        eval_pairs_per_subject=2,
        splits_dir=str(tmp_path / "splits"),
        split_fractions=(0.5, 0.25, 0.25),
    )
    dm = FMRIDataModule(cfg)
    dm.setup("fit")
    assert isinstance(dm.train_dataset, PairDataset) and dm.val_dataset.mode == "eval"
    batches = list(dm.train_dataloader())
    # no partial batch: a pair alone has no negative
    assert len(batches) == len(dm.train_dataset) // 4
    val = next(iter(dm.val_dataloader()))
    # distinct subjects per batch
    assert len(set(val.subject_id)) == min(4, dm.val_dataset.num_subjects)
    with pytest.raises(ValueError, match="at least 2 per device"):
        DataConfig(pairs=True, batch_size=2, num_devices=2)
    with pytest.raises(ValueError, match="validation split has 1"):
        FMRIDataModule(
            DataConfig(
                store_path=str(store.root),
                sequence_length=L,
                pairs=True,
                num_workers=0,
                splits_dir=str(tmp_path / "s2"),
                split_name="tiny",
                split_fractions=(0.8, 0.1, 0.1),
            )
        ).setup("fit")
