"""Which subjects to interpret: explicit ids checked against the store, or a split of the
checkpoint's run (``train``/``val``/``test``/``all``) read from its split file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from swiftlib.utils.validation import did_you_mean

__all__ = ["SPLITS", "as_store", "check_subjects", "resolve_split", "split_column"]

SPLITS = ("train", "val", "test", "all")


def as_store(store):
    """An open store: ``store`` itself, or the store at that path (``open_store``)."""
    from swiftlib.data.store import open_store

    return open_store(store) if isinstance(store, (str, Path)) else store


def check_subjects(store, subjects: Sequence[str] | str) -> list[str]:
    """``subjects`` as a list of store subject ids; unknown ids fail naming them."""
    if isinstance(subjects, str):
        subjects = [subjects]
    ids = [str(s) for s in subjects]
    if not ids:
        raise ValueError("subjects is empty; expected at least one subject id of the store")
    known = set(store.subject_ids)
    unknown = [s for s in ids if s not in known]
    if unknown:
        hint = did_you_mean(unknown[0], store.subject_ids, n=3)
        raise ValueError(
            f"{len(unknown)} subject(s) are not in store {store.root}: {unknown[:10]}{hint}; "
            f"the store has {len(known)} subjects (store.subject_ids)"
        )
    return ids


def resolve_split(store, split: str, checkpoint=None, splits_file=None) -> list[str]:
    """Store subject ids of ``split`` (``train``/``val``/``test``/``all``).

    The split file is ``splits_file`` when given, else the one the checkpoint's run used:
    ``<run>/config.yaml`` (beside ``checkpoints/``) names ``data.splits_dir`` and
    ``data.split_name``, and the file is ``<splits_dir>/<dataset>/<split_name>.json``.
    """
    from swiftlib.data.splits import subjects_of
    from swiftlib.utils.io import read_json

    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if split == "all":
        return list(store.subject_ids)
    path = Path(splits_file) if splits_file else _run_split_file(store, checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} does not exist; pass splits_file= or subjects= explicitly"
        )
    doc = read_json(path)
    if split not in doc:
        raise ValueError(f"split file {path} has no {split!r} list; expected keys train/val/test")
    ids = subjects_of(store, doc[split])
    if not ids:
        raise ValueError(
            f"split {split!r} of {path} has no subject of store {store.root}; "
            "is it the same cohort?"
        )
    return ids


def split_column(df, store, checkpoint=None, splits_file=None):
    """``df`` with a ``split`` column (train/val/test, or ``none`` for subjects in no split)."""
    out = df.copy()
    where = {}
    for name in ("train", "val", "test"):
        try:
            where.update(dict.fromkeys(resolve_split(store, name, checkpoint, splits_file), name))
        except ValueError:  # an empty split (tiny cohorts)
            continue
    out["split"] = out["subject_id"].map(where).fillna("none")
    return out


def _run_split_file(store, checkpoint) -> Path:
    import yaml

    if checkpoint is None:
        raise ValueError(
            "split= needs splits_file= or the checkpoint of a fit() run (to find its split file)"
        )
    cfg_path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"no {cfg_path} beside checkpoint {checkpoint}, so its split is unknown; pass "
            "splits_file= (data/splits/<dataset>/<name>.json) or subjects= explicitly"
        )
    data = (yaml.safe_load(cfg_path.read_text()) or {}).get("data", {})
    dataset = "+".join(store.datasets) or "custom"
    name = f"{data.get('split_name', 'default')}.json"
    return Path(data.get("splits_dir", "data/splits")) / dataset / name
