"""A resumable training loader: an epoch-seeded, rank-sharded shuffle that can restart in the
middle of an epoch.

Lightning restores a loader that implements ``state_dict`` / ``load_state_dict`` when a run
resumes from a mid-epoch checkpoint; :class:`ResumableLoader` records the epoch and how many
batches the trainer consumed, and the next iteration skips exactly those. The permutation of
epoch ``e`` depends only on ``(seed, e)`` (as ``DistributedSampler``), so a resumed run sees
the same batches in the same order as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochShuffleSampler", "ResumableLoader"]


class EpochShuffleSampler(Sampler[int]):
    """Shuffle ``num_samples`` indices with seed ``seed + epoch``; shard across ``num_replicas``
    ranks (padding by wrap-around so every rank has the same count, as DistributedSampler);
    skip the first ``skip`` indices of this rank once (mid-epoch resume)."""

    def __init__(self, num_samples: int, seed: int = 0, num_replicas: int = 1, rank: int = 0, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError(f"EpochShuffleSampler: num_samples={num_samples}; expected ≥ 1 (an empty training set?)")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        self.num_samples, self.seed, self.shuffle = int(num_samples), int(seed), shuffle
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.per_rank = math.ceil(self.num_samples / self.num_replicas)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.skip = 0
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.num_replicas
        order = (order * math.ceil(total / len(order)))[:total]  # pad by wrap-around
        return order[self.rank:total:self.num_replicas]

    def __iter__(self):
        idx = self.indices()[self.skip:]
        self.skip = 0
        return iter(idx)

    def __len__(self) -> int:
        # the epoch's full length even when resuming: Lightning counts batches from its
        # restored progress, not from the start of this iterator
        return self.per_rank


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochShuffleSampler` with ``state_dict`` /
    ``load_state_dict`` (Lightning calls them for mid-epoch checkpoints).

    The state is the number of batches the trainer has taken in this epoch. Lightning's
    training loop takes batches from a ``len``-aware loader one at a time (no read-ahead),
    so batches yielded = batches consumed; ``prefetch`` is the correction for a loop that
    reads ahead. The kill-and-resume test fails if a batch is skipped or repeated.
    """

    prefetch = 0

    def __init__(self, dataset, batch_size: int, sampler: EpochShuffleSampler, **kwargs):
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._yielded = 0
        self._exhausted = False

    def __iter__(self):
        self._yielded, self._exhausted = self.sampler.skip // self.batch_size, False
        for batch in super().__iter__():
            self._yielded += 1
            yield batch
        self._exhausted = True

    def state_dict(self) -> dict:
        consumed = self._yielded if self._exhausted else max(0, self._yielded - self.prefetch)
        return {"epoch": self.sampler.epoch, "batches": consumed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("batch_size") not in (None, self.batch_size):
            raise ValueError(
                f"resuming with per-device batch size {self.batch_size}, but the checkpoint was written with "
                f"{state['batch_size']}; resume with the same batch_size, devices and accumulation"
            )
        self.sampler.epoch = int(state["epoch"])
        self.sampler.skip = int(state["batches"]) * self.batch_size
