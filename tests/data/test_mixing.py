"""Multi-dataset mixing: balanced weights, determinism, disjoint DDP shards, mid-epoch skip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from swiftlib.data.mixing import MixedWindowDataset, MixingSampler, resolve_weights
from swiftlib.data.windows import WindowDataset
from tests.data.conftest import Range


def mixed(big=300, small=30):
    return MixedWindowDataset({"big": Range(big), "small": Range(small)})


def test_mixed_dataset_names():
    ds = mixed()
    assert ds.names == ["big", "small"] and ds.sizes == [300, 30] and len(ds) == 330
    assert (
        ds.dataset_of(0) == "big" and ds.dataset_of(299) == "big" and ds.dataset_of(300) == "small"
    )
    assert MixedWindowDataset([Range(2), Range(3)]).names == ["0", "1"]
    with pytest.raises(ValueError, match="at least one dataset"):
        MixedWindowDataset([])
    with pytest.raises(ValueError, match=r"\['empty'\] have no windows"):
        MixedWindowDataset({"a": Range(2), "empty": Range(0)})


def _fractions(sampler, ds):
    idx = np.array(list(sampler))
    return (idx < ds.sizes[0]).mean(), idx


def test_balanced_by_default():
    ds = mixed()
    s = MixingSampler(ds, num_samples=20000, seed=0)
    frac_big, idx = _fractions(s, ds)
    assert len(idx) == 20000 and abs(frac_big - 0.5) < 0.02
    assert idx.min() >= 0 and idx.max() < 330
    small = idx[idx >= 300] - 300
    assert len(np.unique(small)) == 30  # every window of the small set is drawn


def test_proportional_and_explicit_weights():
    ds = mixed()
    frac, _ = _fractions(MixingSampler(ds, weights="proportional", num_samples=20000), ds)
    assert abs(frac - 300 / 330) < 0.01
    frac, _ = _fractions(
        MixingSampler(ds, weights={"big": 1.0, "small": 3.0}, num_samples=20000), ds
    )
    assert abs(frac - 0.25) < 0.02
    frac, _ = _fractions(MixingSampler(ds, weights=[1.0, 0.0], num_samples=1000), ds)
    assert frac == 1.0
    assert len(MixingSampler(ds)) == 330  # default: one epoch = the total number of windows


@pytest.mark.parametrize(
    "weights, fragment",
    [
        ("uniform", "expected 'balanced', 'proportional'"),
        ({"big": 1.0}, r"missing \['small'\]"),
        ({"big": 1.0, "small": 1.0, "hcp": 1.0}, r"unknown \['hcp'\]"),
        ([1.0], "1 weights for 2 datasets"),
        ([0.0, 0.0], "not all zero"),
        ([1.0, -1.0], "non-negative"),
    ],
)
def test_weight_errors(weights, fragment):
    with pytest.raises(ValueError, match=fragment):
        resolve_weights(["big", "small"], [300, 30], weights)


def test_seed_and_epoch():
    ds = mixed()
    a, b = MixingSampler(ds, seed=1), MixingSampler(ds, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(MixingSampler(ds, seed=2)) != first


def test_ddp_shards_are_disjoint_parts_of_one_draw():
    ds = mixed()
    full = list(MixingSampler(ds, num_samples=102, seed=3, num_replicas=1, rank=0))
    r0 = MixingSampler(ds, num_samples=101, seed=3, num_replicas=2, rank=0)
    r1 = MixingSampler(ds, num_samples=101, seed=3, num_replicas=2, rank=1)
    assert isinstance(r0, DistributedSampler)  # Lightning leaves it in place
    assert len(r0) == len(r1) == 51
    s0, s1 = list(r0), list(r1)
    # positions rank, rank+R, ...: together they are one global draw of ceil(101/2)*2 samples
    together = [v for pair in zip(s0, s1, strict=True) for v in pair]
    assert together == full
    with pytest.raises(ValueError, match="rank=2, num_replicas=2"):
        MixingSampler(ds, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_samples=0"):
        MixingSampler(ds, num_samples=0)


def test_epoch_draws_depend_only_on_seed_and_epoch():
    ds = MixedWindowDataset({"ukb": Range(50), "abcd": Range(20), "hcp": Range(7)})
    walked = MixingSampler(ds, seed=5)
    for e in range(3):  # an instance that has iterated epochs 0-2 ...
        walked.set_epoch(e)
        list(walked)
    fresh = MixingSampler(ds, seed=5)
    fresh.set_epoch(2)  # ... and a fresh one jumping straight to epoch 2 draw the same
    assert list(walked) == list(fresh) == list(fresh)
    epochs = []
    for e in range(3):
        fresh.set_epoch(e)
        epochs.append(list(fresh))
    assert len({tuple(x) for x in epochs}) == 3  # and each epoch differs


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_are_disjoint_and_complete(world):
    ds = MixedWindowDataset({"ukb": Range(50), "abcd": Range(20), "hcp": Range(7)})
    for epoch in (0, 4):
        single = MixingSampler(ds, num_samples=77 + (-77) % world, seed=9, num_replicas=1, rank=0)
        single.set_epoch(epoch)
        ranks = [
            MixingSampler(ds, num_samples=77, seed=9, num_replicas=world, rank=r)
            for r in range(world)
        ]
        for s in ranks:
            s.set_epoch(epoch)
        shards = [list(s) for s in ranks]
        assert [len(x) for x in shards] == [len(s) for s in ranks] == [-(-77 // world)] * world
        # draws are with replacement, so "disjoint" is about positions: position p of the
        # epoch's one global draw goes to rank p % world, each position to exactly one rank
        global_draw = list(single)
        assert sum(len(x) for x in shards) == len(global_draw)
        assert all(shards[r] == global_draw[r::world] for r in range(world))


def test_skip_resumes_inside_the_epoch_once():
    ds = MixedWindowDataset({"ukb": Range(50), "abcd": Range(20)})
    s = MixingSampler(ds, seed=2, num_replicas=2, rank=1)
    s.set_epoch(3)
    epoch3 = list(s)
    s.skip = 10
    s.set_epoch(3)  # Lightning calls set_epoch with the restored epoch: the skip stays
    assert list(s) == epoch3[10:]
    assert list(s) == epoch3  # once only: the next pass is the whole epoch
    s.skip = 10
    s.set_epoch(4)  # another epoch: the position means nothing there
    assert len(list(s)) == len(s) == 35
    s.skip = len(s)  # a checkpoint at the very end of the epoch
    s.set_epoch(4)
    assert list(s) == []


def test_with_window_datasets(small_store, other_store):
    a = WindowDataset(small_store[0], sequence_length=20, stride_between_seq=0.5)
    b = WindowDataset(other_store[0], sequence_length=20, stride_between_seq=0.5)
    ds = MixedWindowDataset({"synthetic": a, "other": b})
    s = MixingSampler(ds, num_samples=400, seed=0)
    got = [ds[i].dataset for i in list(s)[:40]]
    assert set(got) == {"synthetic", "other"}
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=s, collate_fn=_collate)
    batch = next(iter(loader))
    assert batch.x.shape == (4, 1, 20, 24, 22, 20)


def _mixed_module(paths, tmp_path, **kw):
    from swiftlib.data.datamodule import FMRIDataModule

    return FMRIDataModule(
        {
            "store_path": [str(p) for p in paths],
            "sequence_length": 20,
            "batch_size": 4,
            "num_workers": 0,
            "split_fractions": [0.5, 0.25, 0.25],
            "splits_dir": str(tmp_path / "splits"),
            **kw,
        }
    )


def test_mixed_stores_get_the_resumable_loader(small_store, other_store, tmp_path):
    from swiftlib.data.loader import ResumableLoader

    dm = _mixed_module([small_store[0].root, other_store[0].root], tmp_path, mix_num_samples=14)
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader.sampler, MixingSampler)
    assert dm.num_train_samples == 14 != len(dm.train_dataset)  # the draws, not the windows
    it = iter(loader)
    next(it)
    assert loader.state_dict() == {
        "epoch": 0,
        "batches": 1,
        "batch_size": 4,
        "samples_per_epoch": 14,
    }


def test_two_stores_of_one_dataset_are_refused(small_store, tmp_path):
    from tests.data.conftest import build_store

    twin, _ = build_store(tmp_path / "twin", frames=[30, 31, 33, 35])  # also dataset "synthetic"
    dm = _mixed_module([small_store[0].root, twin.root], tmp_path)
    with pytest.raises(
        ValueError, match=r"stores .*store_a.* and .*twin both hold dataset 'synthetic'"
    ):
        dm.setup()


def _collate(samples):
    from swiftlib.data.windows import collate_samples

    return collate_samples(samples)


def _store_with(root, frames, dataset, grid=None, **manifest_fields):
    """A small store of ``dataset`` whose manifest then declares ``manifest_fields``."""
    import json

    from swiftlib.data.store import open_store
    from tests.data.conftest import GRID, build_store

    kw = dict(dataset=dataset, prefix=f"sub-{dataset}", nan_age=(), second_session=False)
    store, _ = build_store(root, frames=frames, grid=grid or GRID, **kw)
    if manifest_fields:
        mpath = store.root / "manifest.json"
        manifest = json.loads(mpath.read_text())
        mpath.write_text(json.dumps({**manifest, **manifest_fields}))
    return open_store(store.root)


def test_stores_with_different_contracts_are_not_mixed(small_store, tmp_path):
    from swiftlib.data.mixing import check_mixable

    a = small_store[0]
    b = _store_with(
        tmp_path / "b", [30, 31], "psc", normalisation="psc", template="MNI152NLin6Asym"
    )
    with pytest.raises(ValueError) as e:
        check_mixable([a, b])
    msg = str(e.value)
    sa, sb = f"synthetic ({a.root})", f"psc ({b.root})"
    assert f"normalisation: {sa} has 'zscore_global', {sb} has 'psc'" in msg
    assert f"template: {sa} has 'unknown', {sb} has 'MNI152NLin6Asym'" in msg
    assert "grid:" not in msg and "(--template, --normalisation of `swiftlib preprocess`)" in msg
    # the data module refuses before reading any data, and so does a hand-built mix
    with pytest.raises(ValueError, match="normalisation: synthetic"):
        _mixed_module([a.root, b.root], tmp_path).setup()
    with pytest.raises(ValueError, match="different input contracts"):
        MixedWindowDataset(
            {
                "synthetic": WindowDataset(a, sequence_length=20),
                "psc": WindowDataset(b, sequence_length=20),
            }
        )
    c = _store_with(tmp_path / "c", [30, 31], "coarse", grid=(20, 24, 20))
    with pytest.raises(
        ValueError, match=r"grid: synthetic .* has \[20, 24, 22\], coarse .* has \[20, 24, 20\]"
    ):
        check_mixable([a, c])


def test_the_run_contract_spans_the_mixed_stores_tr(small_store, tmp_path):
    from swiftlib.data.mixing import mixed_contract

    a = small_store[0]
    b = _store_with(tmp_path / "b", [30, 31], "slow", tr_range=[2.0, 2.5])
    contract = mixed_contract([a, b])
    assert contract["tr_range"] == [0.8, 2.5] and contract["grid"] == [20, 24, 22]
    dm = _mixed_module([a.root, b.root], tmp_path)
    dm.setup()
    assert dm.contract() == contract
