"""A resumable training loader: epoch-seeded, rank-sharded samplers that can restart in the
middle of an epoch.

Lightning restores a loader that implements ``state_dict`` / ``load_state_dict`` when a run
resumes from a mid-epoch checkpoint; :class:`ResumableLoader` records the epoch and how many
batches the trainer consumed, and the next iteration skips exactly those. It works with any
:class:`ResumableSampler` — the single-store shuffle (:class:`EpochShuffleSampler`) and the
multi-cohort mix (:class:`~swiftlib.data.mixing.MixingSampler`) alike. A resumable sampler's
order for epoch ``e`` depends only on ``(seed, e)`` and the rank (as ``DistributedSampler``),
so a resumed run sees the same batches in the same order as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochShuffleSampler", "ResumableLoader", "ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Base of the samplers :class:`ResumableLoader` can restart mid-epoch.

    A subclass implements :meth:`indices` — this rank's indices for the whole of epoch
    ``self.epoch``, a function of its seed, the epoch and the rank only — and ``__len__``
    (their count, the full epoch even while resuming: Lightning counts batches from its
    restored progress, not from the start of this iterator). The base keeps the epoch
    (Lightning calls :meth:`set_epoch` at the start of each) and ``skip``: the next
    iteration starts ``skip`` indices into the epoch, later ones from its start.
    """

    epoch: int = 0
    skip: int = 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.skip = 0  # a position inside another epoch means nothing in this one
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} must implement indices()")

    def __iter__(self):
        idx = self.indices()[self.skip :]
        self.skip = 0
        return iter(idx)


class EpochShuffleSampler(ResumableSampler):
    """Shuffle ``num_samples`` indices with seed ``seed + epoch``; shard across ``num_replicas``
    ranks (padding by wrap-around so every rank has the same count, as DistributedSampler);
    skip the first ``skip`` indices of this rank once (mid-epoch resume)."""

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
    ):
        if num_samples < 1:
            raise ValueError(
                f"EpochShuffleSampler: num_samples={num_samples}; expected ≥ 1 (an empty training "
                "set?)"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        self.num_samples, self.seed, self.shuffle = int(num_samples), int(seed), shuffle
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.per_rank = math.ceil(self.num_samples / self.num_replicas)
        self.epoch = 0
        self.skip = 0

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.num_replicas
        order = (order * math.ceil(total / len(order)))[:total]  # pad by wrap-around
        return order[self.rank : total : self.num_replicas]

    def __len__(self) -> int:
        return self.per_rank


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` with ``state_dict`` /
    ``load_state_dict`` (Lightning calls them for mid-epoch checkpoints).

    The state is the epoch and the number of batches the trainer has taken in it, plus the
    per-device batch size and this rank's samples per epoch, which a resume must keep (else
    the skipped prefix would not be the batches already trained on). Lightning's training
    loop takes batches from a ``len``-aware loader one at a time (no read-ahead), so batches
    yielded = batches consumed; ``prefetch`` is the correction for a loop that reads ahead.
    The kill-and-resume tests (single store and mixed stores) fail if a batch is skipped or
    repeated.
    """

    prefetch = 0

    def __init__(self, dataset, batch_size: int, sampler: ResumableSampler, **kwargs):
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(
                f"ResumableLoader needs a ResumableSampler (EpochShuffleSampler, MixingSampler), "
                f"got {type(sampler).__name__}; without set_epoch/skip it cannot restart mid-epoch"
            )
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
        return {
            "epoch": self.sampler.epoch,
            "batches": consumed,
            "batch_size": self.batch_size,
            "samples_per_epoch": len(self.sampler),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("batch_size") not in (None, self.batch_size):
            raise ValueError(
                f"resuming with per-device batch size {self.batch_size}, but the checkpoint was "
                f"written with {state['batch_size']}; resume with the same batch_size, devices and "
                "accumulation"
            )
        if state.get("samples_per_epoch") not in (None, len(self.sampler)):
            raise ValueError(
                f"resuming with {len(self.sampler)} training samples per epoch on this device, but "
                f"the checkpoint was written with {state['samples_per_epoch']}; resume with the "
                "same stores, splits, few_shot_n, mix_num_samples and devices (or start a new run "
                "with init_from)"
            )
        self.sampler.epoch = int(state["epoch"])
        self.sampler.skip = int(state["batches"]) * self.batch_size
