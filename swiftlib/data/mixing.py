"""Multi-dataset mixing for pretraining: one dataset of several cohorts, balanced sampling.

``MixedWindowDataset`` concatenates :class:`~swiftlib.data.windows.WindowDataset` s (one per
cohort or store). :class:`MixingSampler` draws each sample by first choosing a dataset with
probability proportional to its weight — by default ``"balanced"``: every dataset equally
likely whatever its size, so 40 000 UKB subjects do not drown 1 000 HCP subjects — then a
window of that dataset uniformly at random (with replacement, like
``WeightedRandomSampler``).

Distributed training: every rank draws the same seeded global sequence for an epoch and
keeps the positions ``rank, rank + R, rank + 2R, …``, so ranks get disjoint shards of one
epoch's draws. The sampler subclasses ``DistributedSampler`` so Lightning leaves it in place
and calls :meth:`MixingSampler.set_epoch` each epoch.

Contract: stores are mixed only when they hold the same kind of input — grid, voxel size,
space, voxel layout, MNI template and normalisation equal (:func:`check_mixable`); a model
trained on two normalisations or two voxel orders at once learns neither, and a mixed grid
fails mid-epoch. TR ranges may differ (the run's contract spans them, :func:`mixed_contract`).

Resume: the draws of epoch ``e`` depend only on ``(seed, e)``, and the sampler is a
:class:`~swiftlib.data.loader.ResumableSampler`, so a
:class:`~swiftlib.data.loader.ResumableLoader` over it restarts mid-epoch exactly where a
preempted run stopped (the same mechanism as the single-store shuffle).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import ConcatDataset, DistributedSampler

from swiftlib.data.loader import ResumableSampler

__all__ = [
    "MIXING_CONTRACT_FIELDS",
    "MixedWindowDataset",
    "MixingSampler",
    "check_mixable",
    "mixed_contract",
    "resolve_weights",
]

log = logging.getLogger(__name__)

#: Contract fields that must be equal for stores to be mixed (the TR range may differ).
MIXING_CONTRACT_FIELDS = ("grid", "voxel_size", "space", "layout", "template", "normalisation")
_PREPROCESS_FLAGS = {
    "grid": "--grid",
    "voxel_size": "--voxel-size",
    "layout": "--layout",
    "template": "--template",
    "normalisation": "--normalisation",
}


def _store_name(store) -> str:
    return f"{'+'.join(store.datasets) or 'custom'} ({store.root})"


def check_mixable(stores: Sequence) -> None:
    """Refuse to mix stores whose input contracts differ (:data:`MIXING_CONTRACT_FIELDS`),
    naming each store and its value of every differing field."""
    stores = list(stores)
    if len(stores) < 2:
        return
    contracts = [s.contract() for s in stores]
    diffs, flags = [], []
    for key in MIXING_CONTRACT_FIELDS:
        values = [c.get(key) for c in contracts]
        norm = [tuple(v) if isinstance(v, list) else v for v in values]
        if len(set(norm)) > 1:
            each = ", ".join(
                f"{_store_name(s)} has {v!r}" for s, v in zip(stores, values, strict=True)
            )
            diffs.append(f"{key}: {each}")
            if key in _PREPROCESS_FLAGS:
                flags.append(_PREPROCESS_FLAGS[key])
    if diffs:
        raise ValueError(
            "stores with different input contracts cannot be mixed in one run — "
            + "; ".join(diffs)
            + ". Preprocess the cohorts with the same settings ("
            + ", ".join(flags)
            + " of `swiftlib preprocess`), or train on them in separate runs"
        )


def mixed_contract(stores: Sequence) -> dict:
    """The input contract of a run on ``stores`` (checked with :func:`check_mixable`): their
    shared fields and the TR range spanning all of them."""
    stores = list(stores)
    check_mixable(stores)
    contract = dict(stores[0].contract())
    ranges = [s.contract()["tr_range"] for s in stores]
    contract["tr_range"] = [min(r[0] for r in ranges), max(r[1] for r in ranges)]
    return contract


class MixedWindowDataset(ConcatDataset):
    """Several window datasets as one; ``names[i]`` labels ``datasets[i]``.

    Args:
        datasets: ``{name: dataset}`` or a sequence of datasets (named ``"0"``, ``"1"``, …).
    """

    def __init__(
        self, datasets: Mapping[str, torch.utils.data.Dataset] | Sequence[torch.utils.data.Dataset]
    ):
        if isinstance(datasets, Mapping):
            names, parts = [str(k) for k in datasets], list(datasets.values())
        else:
            parts = list(datasets)
            names = [str(i) for i in range(len(parts))]
        if not parts:
            raise ValueError("MixedWindowDataset needs at least one dataset")
        empty = [n for n, d in zip(names, parts, strict=True) if len(d) == 0]
        if empty:
            raise ValueError(f"dataset(s) {empty} have no windows; remove them from the mix")
        stores = {id(d.store): d.store for d in parts if hasattr(d, "store")}
        check_mixable(list(stores.values()))
        super().__init__(parts)
        self.names = names

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]

    def dataset_of(self, index: int) -> str:
        """Name of the dataset that global ``index`` falls in."""
        return self.names[bisect.bisect_right(self.cumulative_sizes, index)]


def resolve_weights(
    names: Sequence[str],
    sizes: Sequence[int],
    weights: str | Mapping[str, float] | Sequence[float] = "balanced",
) -> torch.Tensor:
    """Per-dataset probabilities (sum 1) from ``"balanced"``, ``"proportional"`` or explicit
    weights."""
    n = len(names)
    if isinstance(weights, str):
        if weights == "balanced":
            w = torch.ones(n, dtype=torch.float64)
        elif weights == "proportional":
            w = torch.tensor([float(s) for s in sizes], dtype=torch.float64)
        else:
            raise ValueError(
                f"weights={weights!r}: expected 'balanced', 'proportional', or a weight per dataset"
            )
    elif isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        missing = [k for k in names if k not in weights]
        if unknown or missing:
            raise ValueError(
                f"dataset weights {dict(weights)}: unknown {unknown}, missing {missing}; "
                f"give one weight for each of {list(names)}"
            )
        w = torch.tensor([float(weights[k]) for k in names], dtype=torch.float64)
    else:
        w = torch.tensor([float(v) for v in weights], dtype=torch.float64)
        if len(w) != n:
            raise ValueError(f"{len(w)} weights for {n} datasets {list(names)}")
    if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(
            f"dataset weights {w.tolist()} must be finite, non-negative and not all zero"
        )
    return w / w.sum()


class MixingSampler(ResumableSampler, DistributedSampler):
    """Weighted dataset-then-window sampling over a :class:`MixedWindowDataset`.

    Args:
        dataset: the mixed dataset.
        weights: ``"balanced"`` (default), ``"proportional"`` (= uniform over windows), a
            mapping name → weight, or one weight per dataset.
        num_samples: draws per epoch over all ranks (default: the total number of windows).
        seed: base seed; epoch ``e`` uses ``seed + e``.
        num_replicas, rank: distributed shard (default: from ``torch.distributed`` if
            initialised, else 1 and 0).

    ``skip`` (set by :class:`~swiftlib.data.loader.ResumableLoader` on resume) drops the
    first ``skip`` draws of this rank once; :meth:`set_epoch` to another epoch clears it.
    """

    def __init__(
        self,
        dataset: MixedWindowDataset,
        weights="balanced",
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if num_replicas is None or rank is None:
            dist = torch.distributed
            on = dist.is_available() and dist.is_initialized()
            num_replicas = (
                num_replicas if num_replicas is not None else (dist.get_world_size() if on else 1)
            )
            rank = rank if rank is not None else (dist.get_rank() if on else 0)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank={rank}, num_replicas={num_replicas}: expected 0 <= rank < num_replicas"
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        names = getattr(dataset, "names", [str(i) for i in range(len(dataset.datasets))])
        self.sizes = [len(d) for d in dataset.datasets]
        self.probs = resolve_weights(names, self.sizes, weights)  # (K,)
        self.offsets = torch.tensor(
            [0] + list(dataset.cumulative_sizes[:-1]), dtype=torch.long
        )  # (K,)
        total = int(num_samples) if num_samples is not None else len(dataset)
        if total < 1:
            raise ValueError(
                f"num_samples={num_samples}: expected a positive number of draws per epoch"
            )
        self.num_samples = math.ceil(total / self.num_replicas)  # per rank
        self.total_size = self.num_samples * self.num_replicas
        log.info(
            "mixing %s with probabilities %s",
            dict(zip(names, self.sizes, strict=True)),
            [round(p, 3) for p in self.probs.tolist()],
        )

    def indices(self) -> list[int]:
        """This rank's draws for the whole of epoch ``self.epoch`` (global dataset indices)."""
        g = torch.Generator().manual_seed(int(self.seed) + int(self.epoch))
        which = torch.multinomial(
            self.probs, self.total_size, replacement=True, generator=g
        )  # (N,) dataset
        sizes = torch.tensor(self.sizes, dtype=torch.float64)
        within = (
            torch.rand(self.total_size, generator=g, dtype=torch.float64) * sizes[which]
        ).long()  # (N,)
        indices = self.offsets[which] + within  # (N,) global index
        return indices[self.rank : self.total_size : self.num_replicas].tolist()

    def __len__(self) -> int:
        return self.num_samples
