"""Subject-level train/val/test splits, written to files, reused, and checked for leakage.

Splits are made over **participants** (``participant_id``), not scans, so two sessions of one
person never land in different splits. A split is written once to
``<splits_dir>/<dataset>/<name>.json`` and reused by every later run with the same
parameters; asking for the same name with different parameters is an error (pass
``overwrite=True`` to replace the file deliberately).

Few-shot training subsets are nested: for one seed, the 20-participant subset is contained
in the 50-participant subset, so learning curves compare like with like.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swiftlib.utils.io import atomic_write_json, read_json

__all__ = [
    "Splits",
    "SplitError",
    "LeakageError",
    "make_splits",
    "load_or_create_splits",
    "check_leakage",
    "few_shot_subset",
    "subjects_of",
]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FORMAT_VERSION = 1


class SplitError(ValueError):
    """A split cannot be made or does not match the request."""


class LeakageError(SplitError):
    """A participant appears in more than one split."""


@dataclass(frozen=True)
class Splits:
    """Participant ids per split and the parameters that made them."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    params: dict = field(default_factory=dict)
    path: str | None = None

    def as_dict(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def __getitem__(self, split: str) -> tuple[str, ...]:
        if split not in SPLIT_NAMES:
            raise KeyError(f"split {split!r}: expected one of {SPLIT_NAMES}")
        return getattr(self, split)


def _check_fractions(fractions) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
        raise SplitError(
            f"fractions={tuple(fractions)}: expected three non-negative numbers (train, val, test) "
            "summing to 1 with train > 0, e.g. (0.7, 0.15, 0.15)"
        )
    return fr


def _allocate(n: int, fractions) -> np.ndarray:
    """Counts per split summing to ``n`` (largest remainder)."""
    exact = np.asarray(fractions) * n
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _allocate_cells(stratum_sizes, split_counts, fractions) -> np.ndarray:
    """Counts per (stratum, split) with exact row sums (stratum sizes) and column sums (split
    counts): floor of the proportional share, then one at a time by largest remainder."""
    sizes = np.asarray(stratum_sizes)
    exact = sizes[:, None] * np.asarray(fractions)[None, :]  # (S, 3)
    cells = np.floor(exact).astype(int)
    rest = exact - cells
    row_left = sizes - cells.sum(1)
    col_left = np.asarray(split_counts) - cells.sum(0)
    while row_left.sum() > 0:
        ok = (row_left[:, None] > 0) & (col_left[None, :] > 0)
        r, c = np.unravel_index(np.argmax(np.where(ok, rest, -1.0)), rest.shape)
        cells[r, c] += 1
        rest[r, c] = -0.5  # filled: below any open cell
        row_left[r] -= 1
        col_left[c] -= 1
    return cells


def make_splits(
    participant_ids: Sequence[str],
    fractions=(0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: Sequence | None = None,
) -> Splits:
    """Split participants at random (seeded), optionally stratified by a class label.

    Args:
        participant_ids: unique participant ids (order does not matter: they are sorted).
        fractions: (train, val, test), summing to 1.
        seed: the random seed; the same ids, fractions and seed give the same split.
        stratify: one class label per participant (aligned with ``participant_ids``);
            missing values form their own stratum.
    """
    fr = _check_fractions(fractions)
    ids = np.asarray([str(p) for p in participant_ids], dtype=object)
    if len(set(ids)) != len(ids):
        dup = sorted({p for p in ids if (ids == p).sum() > 1})
        raise SplitError(f"participant ids repeat: {dup[:10]}; pass each participant once")
    if len(ids) == 0:
        raise SplitError("no participants to split")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if stratify is None:
        strata = np.zeros(len(ids), dtype=object)
    else:
        if len(stratify) != len(order):
            raise SplitError(f"stratify has {len(stratify)} values for {len(order)} participants")
        strata = np.asarray(
            ["<missing>" if _isnan(v) else str(v) for v in np.asarray(stratify, dtype=object)],
            dtype=object,
        )[order]
    rng = np.random.default_rng(seed)
    names = sorted(set(strata))
    members = [ids[strata == st] for st in names]
    members = [m[rng.permutation(len(m))] for m in members]
    cells = _allocate_cells([len(m) for m in members], _allocate(len(ids), fr), fr)  # (S, 3)
    out: dict[str, list[str]] = {k: [] for k in SPLIT_NAMES}
    for m, row in zip(members, cells, strict=True):
        edges = np.concatenate([[0], np.cumsum(row)])
        for k, name in enumerate(SPLIT_NAMES):
            out[name].extend(m[edges[k] : edges[k + 1]].tolist())
    params = {"fractions": list(fr), "seed": int(seed), "stratified": stratify is not None}
    splits = Splits(*(tuple(sorted(out[k])) for k in SPLIT_NAMES), params=params)
    check_leakage(splits)
    return splits


def _isnan(v) -> bool:
    try:
        return bool(np.isnan(float(v)))
    except (TypeError, ValueError):
        return v is None


def _fingerprint(ids) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()[:16]


def load_or_create_splits(
    participant_ids: Sequence[str],
    dataset: str,
    name: str = "default",
    fractions=(0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: Sequence | None = None,
    stratify_label: str | None = None,
    splits_dir="data/splits",
    overwrite: bool = False,
) -> Splits:
    """Reuse ``<splits_dir>/<dataset>/<name>.json`` if it exists, else make and write it.

    ``stratify_label`` names the label used for ``stratify`` (recorded in the file and
    compared on reuse). A file whose fractions, seed, stratification or participant list
    differ from the request raises :class:`SplitError` unless ``overwrite=True``.
    """
    path = Path(splits_dir) / str(dataset) / f"{name}.json"
    fr = _check_fractions(fractions)
    ids = sorted({str(p) for p in participant_ids})
    want = {
        "fractions": list(fr),
        "seed": int(seed),
        "stratify_label": stratify_label if stratify is not None else None,
        "num_participants": len(ids),
        "participants_sha256": _fingerprint(ids),
    }
    if path.exists() and not overwrite:
        saved = read_json(path)
        have = saved.get("params", {})
        diffs = [
            f"{k}: file has {have.get(k)!r}, requested {v!r}"
            for k, v in want.items()
            if have.get(k) != v
        ]
        if diffs:
            extra = ""
            if have.get("participants_sha256") != want["participants_sha256"]:
                listed = {p for s in SPLIT_NAMES for p in saved.get(s, [])}
                added, removed = sorted(set(ids) - listed), sorted(listed - set(ids))
                extra = (
                    f" (participants added: {added[:5]}{'…' if len(added) > 5 else ''} "
                    f"[{len(added)}], removed: {removed[:5]}{'…' if len(removed) > 5 else ''} "
                    f"[{len(removed)}])"
                )
            raise SplitError(
                f"split file {path} was made with different parameters — "
                f"{'; '.join(diffs)}{extra}. Use another split name, or overwrite=True to replace "
                "it (earlier results then no longer match this split)"
            )
        splits = Splits(*(tuple(saved[k]) for k in SPLIT_NAMES), params=have, path=str(path))
        check_leakage(splits)
        log.info("reusing split %s (%s)", path, _sizes(splits))
        return splits
    made = make_splits(ids if stratify is None else participant_ids, fr, seed, stratify)
    splits = Splits(made.train, made.val, made.test, params=want, path=str(path))
    atomic_write_json(
        path,
        {
            "format_version": SPLIT_FORMAT_VERSION,
            "dataset": str(dataset),
            "name": name,
            "params": want,
            **{k: list(v) for k, v in splits.as_dict().items()},
        },
    )
    log.info("wrote split %s (%s)", path, _sizes(splits))
    return splits


def _sizes(splits: Splits) -> str:
    return ", ".join(f"{k} {len(v)}" for k, v in splits.as_dict().items())


def check_leakage(splits: Splits | Mapping[str, Sequence[str]]) -> None:
    """Raise :class:`LeakageError` naming every participant found in two splits."""
    groups = splits.as_dict() if isinstance(splits, Splits) else dict(splits)
    names = list(groups)
    problems = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = sorted(set(map(str, groups[a])) & set(map(str, groups[b])))
            if both:
                problems.append(
                    f"{a}∩{b}: {both[:10]}{' …' if len(both) > 10 else ''} ({len(both)})"
                )
    if problems:
        raise LeakageError("participants appear in more than one split — " + "; ".join(problems))


def few_shot_subset(train_ids: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` participants of ``train_ids`` by seed; nested across ``n`` for one seed.

    The subset is the first ``n`` of one seeded permutation of the sorted ids, so the
    20-subject subset lies inside the 50-subject one. Returned sorted.
    """
    ids = sorted({str(p) for p in train_ids})
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SplitError(f"few-shot n={n!r}: expected a positive integer")
    if n > len(ids):
        raise SplitError(
            f"few-shot n={n} but the training split has only {len(ids)} participants; "
            f"choose n <= {len(ids)}"
        )
    perm = np.random.default_rng(seed).permutation(len(ids))
    return sorted(ids[i] for i in perm[:n])


def subjects_of(store, participant_ids: Sequence[str]) -> list[str]:
    """Store subject ids (scans) of the given participants, in store order."""
    wanted = {str(p) for p in participant_ids}
    table = store.subjects
    return [
        str(s)
        for s, p in zip(table["subject_id"], table["participant_id"].astype(str), strict=True)
        if p in wanted
    ]
