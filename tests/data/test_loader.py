"""ResumableLoader: one mid-epoch resume mechanism for the single-store shuffle and the
multi-cohort mix, per rank."""

from __future__ import annotations

import pytest
from torch.utils.data import RandomSampler

from swiftlib.data.loader import EpochShuffleSampler, ResumableLoader, ResumableSampler
from swiftlib.data.mixing import MixedWindowDataset, MixingSampler
from tests.data.conftest import Range


def _make(kind: str, world: int = 2, rank: int = 0, batch_size: int = 3, num_samples: int = 41):
    if kind == "shuffle":
        ds = Range(num_samples)
        sampler = EpochShuffleSampler(len(ds), seed=4, num_replicas=world, rank=rank)
    else:
        ds = MixedWindowDataset({"ukb": Range(30), "abcd": Range(8), "hcp": Range(3)})
        sampler = MixingSampler(ds, num_samples=num_samples, seed=4, num_replicas=world, rank=rank)
    return ResumableLoader(ds, batch_size=batch_size, sampler=sampler)


@pytest.mark.parametrize("kind", ["shuffle", "mixing"])
@pytest.mark.parametrize("rank", [0, 1])
def test_state_dict_resumes_mid_epoch(kind, rank):
    first = _make(kind, rank=rank)
    assert isinstance(first.sampler, ResumableSampler)
    first.sampler.set_epoch(1)
    full = [b.tolist() for b in first]  # 21 draws on this rank -> 7 batches of 3
    assert len(full) == len(first) == 7
    first.sampler.set_epoch(1)
    it = iter(first)
    taken = [next(it).tolist() for _ in range(4)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 4, "batch_size": 3, "samples_per_epoch": 21}

    resumed = _make(kind, rank=rank)  # a new process: fresh loader, state from the checkpoint
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # what Lightning's fit loop does at the restored epoch
    it = iter(resumed)
    rest = [next(it).tolist() for _ in range(2)]
    assert resumed.state_dict()["batches"] == 6  # counted from the start of the epoch
    rest += [b.tolist() for b in it]
    assert taken + rest == full
    assert resumed.state_dict()["batches"] == 7
    resumed.sampler.set_epoch(2)  # the next epoch is whole again
    assert len(list(resumed)) == 7


@pytest.mark.parametrize("kind", ["shuffle", "mixing"])
def test_resume_with_other_batch_size_or_data_is_refused(kind):
    state = _make(kind).state_dict()
    with pytest.raises(
        ValueError, match="per-device batch size 2, but the checkpoint was written with 3"
    ):
        _make(kind, batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="with 25 training samples per epoch .* written with 21"):
        _make(kind, num_samples=50).load_state_dict(state)
    # checkpoints before the check
    _make(kind).load_state_dict({"epoch": 0, "batches": 1, "batch_size": 3})


def test_a_sampler_without_epoch_and_skip_is_refused():
    with pytest.raises(TypeError, match="needs a ResumableSampler .* got RandomSampler"):
        ResumableLoader(Range(5), batch_size=2, sampler=RandomSampler(Range(5)))
