"""Multi-dataset mixing: balanced weights, determinism and disjoint DDP shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from swiftlib.data.mixing import MixedWindowDataset, MixingSampler, resolve_weights
from swiftlib.data.windows import WindowDataset


class Range(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def mixed(big=300, small=30):
    return MixedWindowDataset({"big": Range(big), "small": Range(small)})


def test_mixed_dataset_names():
    ds = mixed()
    assert ds.names == ["big", "small"] and ds.sizes == [300, 30] and len(ds) == 330
    assert ds.dataset_of(0) == "big" and ds.dataset_of(299) == "big" and ds.dataset_of(300) == "small"
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
    frac, _ = _fractions(MixingSampler(ds, weights={"big": 1.0, "small": 3.0}, num_samples=20000), ds)
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


def _collate(samples):
    from swiftlib.data.windows import collate_samples

    return collate_samples(samples)
