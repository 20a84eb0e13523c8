"""Integrity of a subject store: checksums verified on first open, the checksum cache, the
errors that name a damaged subject, and the subjects-table check.

Integrity on read: the first time a run opens a subject file, its sha256 is compared with
the manifest's record (:meth:`SubjectStore.verify_subjects` checks a run's subjects before
training starts); a mismatch is refused naming the subject, the file, both checksums and
the fix. A verdict costs one hash per file version: it is kept in the process (and travels
with the store object into DataLoader workers) keyed by the file's size, mtime and inode,
and — when the store directory is writable — in ``STORE/.verified.json`` (written
atomically; a file modified less than 2 s before it was hashed is not recorded there, as
git does for "racily clean" files, since a same-size rewrite within the filesystem's
timestamp granularity would keep its mtime). The cache records the hash it computed, not a
verdict, so an edited manifest checksum is still caught. Every read error (a damaged
HDF5 chunk, a missing dataset) is re-raised as :class:`StoreReadError` naming the subject
and the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from swiftlib.utils.io import atomic_write_json, read_json, sha256_file

__all__ = [
    "VERIFIED_CACHE",
    "CorruptSubjectError",
    "StoreError",
    "StoreIntegrity",
    "StoreReadError",
    "check_subjects_table",
]

log = logging.getLogger(__name__)


class StoreError(ValueError):
    """A store on disk is missing, incomplete or inconsistent."""


class CorruptSubjectError(StoreError):
    """A subject file's checksum differs from the one the manifest records."""


class StoreReadError(StoreError):
    """A subject file could not be read (damaged HDF5, missing dataset, unreadable file)."""


#: File name of the checksum cache beside a store's manifest.
VERIFIED_CACHE = ".verified.json"
#: A file modified this recently when hashed is not written to the cache file (racy mtime).
_RACY_NS = 2_000_000_000
#: sha256 of file versions hashed in this process: (path, size, mtime_ns, inode) -> hex digest.
_HASHES: dict[tuple[str, int, int, int], str] = {}


def _file_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), int(st.st_size), int(st.st_mtime_ns), int(st.st_ino))


class StoreIntegrity:
    """The checksum side of :class:`~swiftlib.data.store.SubjectStore` (a mixin): the store
    provides ``root``, ``manifest``, ``subject_ids``, ``path``, ``_record``, and the attributes
    ``_hashes`` (file key → sha256) and ``_disk_cache`` (None until read)."""

    def _cache_path(self) -> Path:
        return self.root / VERIFIED_CACHE

    def _read_cache(self) -> dict:
        try:
            doc = read_json(self._cache_path())
            return doc["files"] if isinstance(doc.get("files"), dict) else {}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return {}  # absent or unreadable: the cache only ever saves work

    def _write_cache(self, found: dict) -> None:
        """Merge ``found`` ({file: {size, mtime_ns, inode, sha256}}) into the cache file, if
        the store directory is writable (a read-only shared store keeps the in-process cache)."""
        if not found or not os.access(self.root, os.W_OK):
            return
        listed = {r["file"] for r in self.manifest["subjects"].values()}
        files = {k: v for k, v in {**self._read_cache(), **found}.items() if k in listed}
        self._disk_cache = files
        try:
            atomic_write_json(self._cache_path(), {"format": "swiftlib-verified", "files": files})
        except OSError as e:  # full disk, quota, a read-only mount: not worth failing a run
            log.debug(
                "could not write %s (%s); checksums stay cached in this process", self.root, e
            )

    def _actual_sha256(self, subject_id: str, found: dict) -> tuple[str, bool]:
        """(sha256 of the subject file as it is now, whether it was hashed just now)."""
        path = self.path(subject_id)
        try:
            key = _file_key(path)
        except FileNotFoundError:
            raise StoreReadError(
                f"subject {subject_id}: file {path} is missing (the manifest lists it); rerun "
                "preprocessing into this store to write it again"
            ) from None
        known = self._hashes.get(key) or _HASHES.get(key)
        rel = self._record(subject_id)["file"]
        if known is None and self._disk_cache is None:
            self._disk_cache = self._read_cache()
        entry = (self._disk_cache or {}).get(rel)
        if known is None and isinstance(entry, dict):
            if [entry.get("size"), entry.get("mtime_ns"), entry.get("inode")] == list(key[1:]):
                known = entry.get("sha256")
        hashed = known is None
        if hashed:
            known = sha256_file(path)
            if time.time_ns() - key[2] > _RACY_NS:
                found[rel] = {"size": key[1], "mtime_ns": key[2], "inode": key[3], "sha256": known}
        self._hashes[key] = _HASHES[key] = known
        return known, hashed

    def _mismatch(self, subject_id: str, actual: str) -> str:
        expected = self._record(subject_id)["sha256"]
        return (
            f"subject {subject_id}: file {self.path(subject_id)} has sha256 {actual}, but "
            f"{self.root / 'manifest.json'} records {expected}"
        )

    def verify_subjects(self, subject_ids=None) -> dict:
        """Check the sha256 of each subject file (default: all) against the manifest; costs a
        hash only for file versions not verified before (see the module docstring).

        Raises :class:`CorruptSubjectError` naming every mismatching subject, its file, the
        expected and actual checksums and the fix. Returns ``{"subjects", "hashed",
        "bytes_hashed", "seconds"}``.
        """
        ids = self.subject_ids if subject_ids is None else list(dict.fromkeys(subject_ids))
        t0 = time.perf_counter()
        found: dict = {}
        bad, hashed, nbytes = [], 0, 0
        try:
            for sid in ids:
                actual, fresh = self._actual_sha256(sid, found)
                if fresh:
                    hashed += 1
                    nbytes += int(self._record(sid)["bytes"])
                if actual != self._record(sid)["sha256"]:
                    bad.append(self._mismatch(sid, actual))
        finally:
            self._write_cache(found)
        seconds = time.perf_counter() - t0
        if hashed:
            log.info(
                "store %s: verified the checksums of %d subject file(s), %.1f MB, in %.1f s",
                self.root,
                hashed,
                nbytes / 1e6,
                seconds,
            )
        if bad:
            raise CorruptSubjectError(
                f"store {self.root}: {len(bad)} corrupt subject file(s), their sha256 differs "
                "from the manifest's record — "
                + "; ".join(bad[:10])
                + (" …" if len(bad) > 10 else "")
                + ". The file was changed or damaged after preprocessing, or manifest.json was "
                "edited. Fix: rerun the same `swiftlib preprocess` command into this store (it "
                "rewrites subjects whose file no longer matches its record, and the manifest), "
                "or restore the files from a copy; `swiftlib info STORE --verify checksum` lists "
                "every damaged subject"
            )
        return {"subjects": len(ids), "hashed": hashed, "bytes_hashed": nbytes, "seconds": seconds}

    @contextlib.contextmanager
    def _reading(self, subject_id: str, what: str):
        """Re-raise a read error naming the subject and its file."""
        try:
            yield
        except StoreError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise StoreReadError(
                f"subject {subject_id}: cannot read {what} from {self.path(subject_id)} "
                f"({type(e).__name__}: {e}). The file is damaged or not a swiftlib subject file: "
                "check the store with `swiftlib info STORE --verify checksum` and rerun "
                "preprocessing into it to rewrite the subject"
            ) from e


def _cell(value) -> str:
    """A table cell as the user wrote it: text quoted, numbers plain (2, not np.float64(2.0))."""
    if isinstance(value, str):
        return repr(value)
    return f"{float(value):g}" if isinstance(value, (int, float, np.number)) else repr(value)


def check_subjects_table(where, subjects, labels: dict, in_file: bool = True):
    """A subjects table checked: one row per subject and numeric label values (a
    classification label: integers ``0 … num_classes-1``). Label columns come back as floats
    (missing values NaN). Errors name ``where`` (the file), the subjects, their lines (the
    file's line numbers, header = line 1; ``in_file=False``: table rows from 0) and values."""
    import pandas as pd

    def _rows(positions) -> str:
        return ", ".join(str(int(i) + (2 if in_file else 0)) for i in positions)

    unit = "line" if in_file else "row"
    dup = subjects["subject_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        ids = subjects["subject_id"].to_numpy()
        parts = [
            f"{sid!r} on {unit}s {_rows(np.flatnonzero(dup & (ids == sid)))}"
            for sid in dict.fromkeys(ids[dup])
        ]
        header = " (line 1 is the header)" if in_file else ""
        raise StoreError(
            f"{where}: subject ids repeat — {'; '.join(parts[:10])}"
            f"{' …' if len(parts) > 10 else ''}{header}. Keep one row per subject (delete the "
            f"repeated {unit}s){' or rerun preprocessing into this store' if in_file else ''}"
        )
    subjects = subjects.copy()
    for name, spec in labels.items():
        if name not in subjects.columns:
            continue  # reported where the label is used (it may not be needed by this run)
        raw = subjects[name]
        values = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = values.isna().to_numpy() & raw.notna().to_numpy()
        if spec.get("task") == "classification" and spec.get("num_classes"):
            v = values.to_numpy()
            ok = np.isnan(v) | ((v == np.round(v)) & (v >= 0) & (v < spec["num_classes"]))
            bad |= ~ok
            expected = f"integer classes 0..{int(spec['num_classes']) - 1}"
        else:
            expected = "numbers (empty for a missing value)"
        if bad.any():
            pos = np.flatnonzero(bad)
            shown = ", ".join(
                f"{subjects['subject_id'].iloc[i]} = {_cell(raw.iloc[i])} ({unit} {_rows([i])})"
                for i in pos[:10]
            )
            raise StoreError(
                f"{where}: label column {name!r} ({spec.get('task')}) has values that are not "
                f"{expected}: {shown}{' …' if len(pos) > 10 else ''} ({len(pos)} in all). "
                "Fix those cells (leave a cell empty for a missing value) or rerun preprocessing "
                "with a corrected phenotype table"
            )
        subjects[name] = values
    return subjects
