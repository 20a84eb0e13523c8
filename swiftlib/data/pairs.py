"""Two windows of one subject per item: the samples of contrastive pretraining (NT-Xent).

Contrastive pretraining (SwiFT v1's public checkpoint) pulls together the embeddings of two
windows of the **same scan** and pushes apart those of other subjects in the batch. SwiFT v1
picks the pair this way: the first window is the dataset's usual window; the second starts
at a frame drawn uniformly from every frame with room for a window, excluding the starts
whose window would share frames with the first. :class:`PairDataset` does the same
(``min_separation`` frames between the two starts, default one window's span: no shared
frame; ``0`` allows any start, the same window included).

* **Training** (a ``mode="train"`` :class:`~swiftlib.data.windows.WindowDataset`, or several
  mixed in a :class:`~swiftlib.data.mixing.MixedWindowDataset`): item ``i`` is the wrapped
  dataset's window ``i`` (every window, or ``windows_per_subject`` random ones) and a random
  partner. Both draws come from a generator seeded by ``(seed, epoch, i)`` — nothing from
  worker or global RNG state — so an epoch's pairs are a function of the seed, the epoch
  and the sampler's order only, and a run resumed mid-epoch sees the same pairs as an
  uninterrupted one. The epoch reaches the dataset with each index:
  :class:`EpochKeyedSampler` wraps a resumable sampler and yields ``(i, epoch)`` keys
  (worker processes never see the main process's attributes change).
* **Evaluation** (``mode="eval"`` datasets): ``pairs_per_subject`` fixed pairs per subject
  (seeded by ``(seed, i)``, the same every epoch), interleaved over subjects —
  item ``i`` is subject ``i mod S`` — so consecutive items, and the windows of one
  validation batch, come from different subjects (a batch of ``B ≤ S`` items has B
  subjects: every other row is a true negative).

Augmentation (``DataConfig.augment``) applies to both training windows independently, as
SwiFT v1 augmented both views; its random stream is the worker's, as for every training
loader.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from swiftlib.data.loader import ResumableSampler
from swiftlib.data.windows import WindowDataset, _stack, window_starts

__all__ = [
    "PairSample",
    "PairBatch",
    "PairDataset",
    "EpochKeyedSampler",
    "collate_pairs",
    "partner_starts",
]

log = logging.getLogger(__name__)

_EVAL_STREAM = 0  # generator key of evaluation pairs; training epoch e uses e + 1


class PairSample(NamedTuple):
    """Two windows of one subject. ``x1``, ``x2``: (1, D, H, W, T); ``starts``: their first
    frames."""

    x1: torch.Tensor
    x2: torch.Tensor
    subject_id: str
    dataset: str
    starts: tuple[int, int]


class PairBatch(NamedTuple):
    """Collated pairs. ``x1``, ``x2``: (B, 1, D, H, W, T); ``window_start``: (B, 2)."""

    x1: torch.Tensor
    x2: torch.Tensor
    subject_id: list[str]
    dataset: list[str]
    window_start: torch.Tensor


def collate_pairs(samples: Sequence[PairSample]) -> PairBatch:
    """Stack :class:`PairSample` s into a :class:`PairBatch` (the DataLoader ``collate_fn``)."""
    if len(samples) == 0:
        raise ValueError("collate_pairs got an empty list of samples")
    return PairBatch(
        x1=_stack([s.x1 for s in samples]),  # (B, 1, D, H, W, T)
        x2=_stack([s.x2 for s in samples]),  # (B, 1, D, H, W, T)
        subject_id=[s.subject_id for s in samples],
        dataset=[s.dataset for s in samples],
        window_start=torch.tensor([s.starts for s in samples], dtype=torch.long),  # (B, 2)
    )


def partner_starts(num_frames: int, span: int, anchor: int, min_separation: int) -> np.ndarray:
    """Every start ``s`` with room for a window of ``span`` frames (``0 ≤ s ≤ num_frames - span``)
    and ``|s - anchor| ≥ min_separation``."""
    starts = np.arange(max(num_frames - span + 1, 0), dtype=np.int64)
    return starts[np.abs(starts - anchor) >= min_separation]


class EpochKeyedSampler(ResumableSampler):
    """A resumable sampler whose indices carry the epoch: yields ``(i, epoch)`` for each index
    ``i`` of ``sampler`` (:class:`~swiftlib.data.loader.EpochShuffleSampler` or
    :class:`~swiftlib.data.mixing.MixingSampler`), the key :class:`PairDataset` seeds its
    draws with. Epoch and mid-epoch position live here (``ResumableLoader`` restores them);
    the wrapped sampler is asked for the whole epoch's order."""

    def __init__(self, sampler: ResumableSampler):
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(
                f"EpochKeyedSampler wraps a ResumableSampler (EpochShuffleSampler, MixingSampler), "
                f"got {type(sampler).__name__}"
            )
        self.sampler = sampler
        self.epoch = sampler.epoch
        self.skip = 0

    def indices(self) -> list[tuple[int, int]]:
        self.sampler.epoch = self.epoch
        return [(int(i), self.epoch) for i in self.sampler.indices()]

    def __len__(self) -> int:
        return len(self.sampler)


class PairDataset(Dataset):
    """Pairs of windows of one subject (see the module docstring).

    Args:
        dataset: a :class:`WindowDataset`, or a ``ConcatDataset`` of them (e.g. a
            ``MixedWindowDataset``); all in ``mode="train"`` or all in ``mode="eval"``.
        min_separation: frames between the two windows' starts; None = a window's span
            (no shared frame, SwiFT v1); 0 = any start.
        pairs_per_subject: evaluation pairs per subject (eval datasets only).
        seed: seed of the window draws.
    """

    def __init__(
        self, dataset, min_separation: int | None = None, pairs_per_subject: int = 4, seed: int = 0
    ):
        parts = list(dataset.datasets) if isinstance(dataset, ConcatDataset) else [dataset]
        bad = [type(p).__name__ for p in parts if not isinstance(p, WindowDataset)]
        if bad:
            raise TypeError(
                f"PairDataset wraps WindowDatasets (or a ConcatDataset of them), got {bad}"
            )
        modes = {p.mode for p in parts}
        if len(modes) != 1:
            raise ValueError(
                f"PairDataset: the wrapped datasets mix modes {sorted(modes)}; expected one"
            )
        if min_separation is not None and int(min_separation) < 0:
            raise ValueError(
                f"min_separation={min_separation}: expected frames ≥ 0, or None (a window's span)"
            )
        if int(pairs_per_subject) < 1:
            raise ValueError(f"pairs_per_subject={pairs_per_subject}: expected an integer ≥ 1")
        self.dataset = dataset  # `dataset`: the name augmentation re-seeding follows into wrappers
        self.parts = parts
        self.mode = modes.pop()
        self.min_separation = None if min_separation is None else int(min_separation)
        self.pairs_per_subject = int(pairs_per_subject)
        self.seed = int(seed)
        self._cumulative = np.cumsum([len(p) for p in parts]).tolist()
        # evaluation order: subjects of every part, interleaved (item i -> subject i mod S)
        self._subjects = [(k, si) for k, p in enumerate(parts) for si in range(len(p.subject_ids))]
        self._check_room()

    def separation(self, part: WindowDataset) -> int:
        """Frames between the starts of a pair drawn from ``part``."""
        return part.span if self.min_separation is None else self.min_separation

    def _anchors(self, part: WindowDataset, si: int) -> tuple[np.ndarray, np.ndarray]:
        """First-window starts of subject ``si`` (the stride grid) and which of them have a
        partner."""
        anchors = window_starts(
            int(part.frames[si]),
            part.sequence_length,
            part.stride_between_seq,
            part.stride_within_seq,
        )
        sep, last = self.separation(part), int(part.frames[si]) - part.span
        return anchors, (anchors - sep >= 0) | (anchors + sep <= last)

    def _check_room(self) -> None:
        """Every first window must have a partner: refuse scans too short for two windows
        ``separation`` frames apart, naming them."""
        short = []
        for part in self.parts:
            for si, sid in enumerate(part.subject_ids):
                _, paired = self._anchors(part, si)
                # training pairs every window of the dataset; evaluation picks among those that
                # can be
                if not (paired.any() if self.mode == "eval" else paired.all()):
                    short.append(f"{sid} ({int(part.frames[si])} frames)")
        if short:
            part = self.parts[0]
            sep = self.separation(part)
            raise ValueError(
                f"{len(short)} scan(s) are too short for two windows {sep} frames apart (a window "
                f"spans {part.span} frames; every first window needs a partner): "
                f"{', '.join(short[:10])}. Use a shorter sequence_length, a smaller "
                "pair_min_separation (0 lets the two windows overlap) or leave these subjects out"
            )

    @property
    def num_subjects(self) -> int:
        return len(self._subjects)

    def __len__(self) -> int:
        if self.mode == "eval":
            return len(self._subjects) * self.pairs_per_subject
        return self._cumulative[-1] if self._cumulative else 0

    def __getitem__(self, key) -> PairSample:
        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"pair {i} out of range for a dataset of {n} pairs")
        stream = _EVAL_STREAM if self.mode == "eval" else epoch + 1
        rng = np.random.default_rng([self.seed, stream, i])
        if self.mode == "eval":
            k, si = self._subjects[i % len(self._subjects)]
            part = self.parts[k]
            anchors, paired = self._anchors(part, si)
            anchors = anchors[paired]
            anchor = int(anchors[rng.integers(len(anchors))])
        else:
            k = bisect.bisect_right(self._cumulative, i)
            part = self.parts[k]
            local = i - (self._cumulative[k - 1] if k > 0 else 0)
            # windows_per_subject draws
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            si, anchor = part.locate(local, generator=gen)
        choices = partner_starts(int(part.frames[si]), part.span, anchor, self.separation(part))
        partner = int(choices[rng.integers(len(choices))])
        a, b = part.read(si, anchor), part.read(si, partner)
        return PairSample(
            x1=a.x, x2=b.x, subject_id=a.subject_id, dataset=a.dataset, starts=(anchor, partner)
        )

    def __repr__(self) -> str:
        return (
            f"PairDataset(mode={self.mode!r}, pairs={len(self)}, subjects={len(self._subjects)}, "
            f"min_separation={self.min_separation})"
        )
