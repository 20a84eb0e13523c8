"""The subject store: one HDF5 file per subject, a subjects table and a manifest.

Layout of a store directory::

    STORE/
      manifest.json        format, geometry, layout, template, normalisation, labels,
                           per-file checksums
      subjects.csv         subject_id, participant_id, dataset, site, label columns
      subjects/<id>.h5     bold_packed (T, V) float16: the V stored voxels, time-major,
                           contiguous and uncompressed (read by memory map); voxels (V,)
                           their flat C-order indices in (D, H, W); background (T,) float16,
                           every other voxel's value per frame; mask (D, H, W) bool;
                           attrs: tr, normalisation statistics, geometry (JSON),
                           layout, template, format_version
      .progress.jsonl      journal of completed subjects (resume support)

The stored voxels are the brain mask plus any voxel outside it whose value differs from the
frame's background (none after SwiFT's normalisation, which fills the background with one
value), so the fp16 round trip is exact for any input. A window of ``L`` frames is one
contiguous ``(L, V)`` slice — about a quarter of the dense window's bytes at 96³ — that
:func:`scatter_frames` (or, late, the batch's own scatter: :mod:`swiftlib.data.windows`)
puts back on the grid. Files of format version 1 (``bold`` (D, H, W, T), chunked, Blosc-LZ4)
stay readable; every file records its ``format_version``. The packed values have no codec,
so damage inside them is caught by the checksum on first open
(:mod:`swiftlib.data.integrity`), a truncated file by the read.

Every file is written to a temporary name and renamed, so a crash never leaves a file
that looks complete. ``open_store`` validates the manifest and the subjects table and names
missing or corrupt subjects.

Integrity (checksums on first open, the ``.verified.json`` cache, read errors naming the
subject) lives in :mod:`swiftlib.data.integrity`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from swiftlib.data.geometry import StoreGeometry
from swiftlib.data.integrity import (
    VERIFIED_CACHE,
    CorruptSubjectError,
    StoreError,
    StoreIntegrity,
    StoreReadError,
    check_subjects_table,
)
from swiftlib.data.layouts import DEFAULT_LAYOUT, UNKNOWN_TEMPLATE, check_template, get_layout
from swiftlib.utils.io import atomic_path, atomic_write_json, read_json, sha256_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NORM_METHODS",
    "VERIFIED_CACHE",
    "StoreError",
    "StoreReadError",
    "CorruptSubjectError",
    "PackedFrames",
    "SubjectRecord",
    "StoreWriter",
    "SubjectStore",
    "open_store",
    "packed_voxels",
    "scatter_frames",
]

log = logging.getLogger(__name__)

FORMAT = "swiftlib-store"
FORMAT_VERSION = 2  # 2: packed time-major voxels (v1 files, dense chunked, stay readable)
NORM_METHODS = ("zscore_global", "zscore_voxel", "psc", "none")
TASK_TYPES = ("classification", "regression")
_TARGET_CHUNK_BYTES = 8 << 20


def _h5():
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Blosc filter for reading and writing)

    return h5py


def _compression():
    import hdf5plugin

    return hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)


def chunk_frames_for(grid, num_frames: int) -> int:
    """Frames per HDF5 chunk of a format-1 file: whole volumes, about 8 MB per chunk."""
    frame_bytes = int(np.prod(grid)) * 2
    return int(max(1, min(num_frames, _TARGET_CHUNK_BYTES // frame_bytes)))


def packed_voxels(bold16: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The voxels a subject file stores: ``(voxels (V,) int64 flat C-order indices, background
    (T,) float16)``. ``bold16``: (D, H, W, T) float16. The background of a frame is the value
    of the first voxel outside ``mask`` (a corner: after SwiFT's normalisation, the one fill
    value), or the most common value outside the mask when that voxel is not typical; a voxel
    outside the mask is stored when any of its values differs from its frame's background
    (bitwise), so scattering the stored voxels onto the background gives ``bold16`` back
    exactly."""
    T = bold16.shape[3]
    flat = bold16.reshape(-1, T).view(np.uint16)  # (N, T) bit patterns
    inside = mask.reshape(-1)
    outside = np.flatnonzero(~inside)
    if len(outside) == 0:
        return np.flatnonzero(inside), np.zeros(T, np.float16)

    def kept(bg):
        keep = inside.copy()
        for i in range(0, len(outside), 1 << 16):  # bounded memory: 65536 voxels × T at a time
            rows = outside[i : i + (1 << 16)]
            keep[rows] = (flat[rows] != bg[None, :]).any(axis=1)
        return keep

    bg = flat[outside[0]].copy()  # (T,)
    keep = kept(bg)
    if 2 * (keep.sum() - inside.sum()) > len(outside):  # the corner is not the background
        bg = np.array(
            [np.bincount(flat[outside, t], minlength=1 << 16).argmax() for t in range(T)],
            dtype=np.uint16,
        )
        keep = kept(bg)
    return np.flatnonzero(keep), bg.view(np.float16)


def scatter_frames(values, voxels, background, grid) -> np.ndarray:
    """Stored voxels back on the grid: ``values`` (L, V) float16, ``voxels`` (V,) flat indices,
    ``background`` (L,) → float16 (D, H, W, L)."""
    L = values.shape[0]
    out = np.empty((int(np.prod(grid)), L), dtype=np.float16)  # (N, L)
    out[...] = np.asarray(background, dtype=np.float16)[None, :]
    out[voxels] = values.T  # (V, L)
    return out.reshape(*grid, L)  # (D, H, W, L)


class PackedFrames(NamedTuple):
    """Frames as stored: ``values`` (L, V) float16, ``voxels`` (V,) int64 flat C-order indices
    into the (D, H, W) grid (shared, read-only), ``background`` (L,) float16 per frame."""

    values: np.ndarray
    voxels: np.ndarray
    background: np.ndarray


@dataclass(frozen=True)
class SubjectRecord:
    subject_id: str
    file: str  # relative to the store root
    num_frames: int
    tr: float
    sha256: str
    bytes: int


def _check_subject_id(subject_id: str) -> str:
    sid = str(subject_id)
    if not sid or any(c in sid for c in "/\\") or sid.startswith("."):
        raise StoreError(
            f"subject_id {sid!r} cannot be used as a file name; expected a BIDS-like label "
            "such as 'sub-0001' (no slashes, not starting with '.')"
        )
    return sid


class StoreWriter:
    """Writes subjects into a store directory, atomically and resumably.

    Args:
        root: store directory (created).
        grid: (D, H, W) of every volume.
        voxel_size: mm, isotropic.
        affine: the store grid's voxel→MNI affine (4×4), in the layout's voxel order.
        normalisation: one of ``NORM_METHODS``.
        layout: the store's voxel convention (:mod:`swiftlib.data.layouts`).
        template: the MNI template of the data (TemplateFlow name) or ``"unknown"``.
    """

    def __init__(
        self,
        root,
        grid,
        voxel_size: float,
        affine,
        normalisation: str = "zscore_global",
        layout: str = DEFAULT_LAYOUT,
        template: str = UNKNOWN_TEMPLATE,
    ):
        if normalisation not in NORM_METHODS:
            raise StoreError(f"normalisation={normalisation!r}: expected one of {NORM_METHODS}")
        try:
            self.layout = get_layout(layout).name
            self.template = check_template(template)
        except ValueError as e:
            raise StoreError(str(e)) from None
        if len(tuple(grid)) != 3 or min(grid) < 1:
            raise StoreError(f"grid={tuple(grid)}: expected three positive sizes (D, H, W)")
        self.root = Path(root)
        self.grid = tuple(int(g) for g in grid)
        self.voxel_size = float(voxel_size)
        self.affine = np.asarray(affine, dtype=float)
        self.normalisation = normalisation
        #: file format written: 2 (packed time-major voxels); 1 writes the previous dense
        #: chunked layout, kept for comparisons and compatibility tests
        self.format_version = FORMAT_VERSION
        (self.root / "subjects").mkdir(parents=True, exist_ok=True)
        self._journal = self.root / ".progress.jsonl"

    # -- writing ---------------------------------------------------------------------------
    def write_subject(
        self,
        subject_id: str,
        bold: np.ndarray,
        mask: np.ndarray,
        geometry: StoreGeometry,
        tr: float,
        norm_stats: dict,
        source: str | None = None,
    ) -> SubjectRecord:
        """Write one subject. ``bold``: (D, H, W, T) normalised; ``mask``: (D, H, W) bool."""
        sid = _check_subject_id(subject_id)
        D, H, W = self.grid
        if bold.ndim != 4 or bold.shape[:3] != self.grid:
            raise StoreError(f"{sid}: bold shape {bold.shape}; expected ({D}, {H}, {W}, T)")
        if mask.shape != self.grid:
            raise StoreError(f"{sid}: mask shape {mask.shape}; expected {self.grid}")
        T = bold.shape[3]
        h5py = _h5()
        bold16 = np.ascontiguousarray(bold, dtype=np.float16)  # (D, H, W, T)
        mask = np.asarray(mask, dtype=bool)
        rel = f"subjects/{sid}.h5"
        with atomic_path(self.root / rel, suffix=".h5.tmp") as tmp:
            with h5py.File(tmp, "w") as f:
                if self.format_version == 1:  # the dense chunked layout (comparisons, tests)
                    chunks = (D, H, W, chunk_frames_for(self.grid, T))
                    f.create_dataset("bold", data=bold16, chunks=chunks, **_compression())
                else:
                    voxels, background = packed_voxels(bold16, mask)
                    packed = np.ascontiguousarray(bold16.reshape(-1, T)[voxels].T)  # (T, V)
                    # contiguous and unfiltered: a window is one slice of a memory map
                    f.create_dataset("bold_packed", data=packed)
                    f.create_dataset("voxels", data=voxels.astype(np.int32), compression="gzip")
                    f.create_dataset("background", data=background)
                f.create_dataset("mask", data=mask, compression="gzip")
                f.attrs["subject_id"] = sid
                f.attrs["tr"] = float(tr)
                f.attrs["normalisation"] = self.normalisation
                f.attrs["norm_stats"] = json.dumps(norm_stats)
                f.attrs["geometry"] = json.dumps(geometry.to_dict())
                f.attrs["source"] = source or ""
                f.attrs["layout"] = self.layout
                f.attrs["template"] = self.template
                f.attrs["format_version"] = self.format_version
        path = self.root / rel
        rec = SubjectRecord(sid, rel, int(T), float(tr), sha256_file(path), path.stat().st_size)
        with open(self._journal, "a") as j:  # one short line per subject: append is atomic enough
            j.write(json.dumps(asdict(rec)) + "\n")
        return rec

    def completed(self, verify: bool = True) -> dict[str, SubjectRecord]:
        """Subjects already written (journal entry + file present, checksum verified)."""
        done: dict[str, SubjectRecord] = {}
        if not self._journal.exists():
            return done
        for line in self._journal.read_text().splitlines():
            try:
                rec = SubjectRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a torn last line from a crash
            path = self.root / rec.file
            if not path.exists() or path.stat().st_size != rec.bytes:
                done.pop(rec.subject_id, None)
                continue
            if verify and sha256_file(path) != rec.sha256:
                done.pop(rec.subject_id, None)
                continue
            done[rec.subject_id] = rec
        return done

    def finalize(
        self,
        subjects,
        labels: dict | None = None,
        dataset_info: dict | None = None,
        records: dict[str, SubjectRecord] | None = None,
    ) -> SubjectStore:
        """Write ``subjects.csv`` and ``manifest.json`` for the written subjects; open the store.

        ``subjects``: DataFrame with a ``subject_id`` column (+ dataset, site, labels); rows of
        subjects that were not written are dropped. ``labels``: ``{name: {"task":
        "classification"|"regression", ...}}`` for label columns.
        """
        import pandas as pd

        records = self.completed(verify=False) if records is None else records
        if not records:
            raise StoreError(f"{self.root}: no subject was written; nothing to finalise")
        labels = dict(labels or {})
        for name, spec in labels.items():
            if spec.get("task") not in TASK_TYPES:
                raise StoreError(
                    f"label {name!r}: task={spec.get('task')!r}; expected one of {TASK_TYPES}"
                )
        df = pd.DataFrame(subjects).copy()
        if "subject_id" not in df.columns:
            raise StoreError(
                f"subjects table has columns {list(df.columns)}; expected a 'subject_id' column"
            )
        df["subject_id"] = df["subject_id"].astype(str)
        df = df[df["subject_id"].isin(records)].sort_values("subject_id").reset_index(drop=True)
        df = check_subjects_table("the subjects table", df, labels, in_file=False)
        for col, default in (("participant_id", None), ("dataset", "custom"), ("site", "unknown")):
            if col not in df.columns:
                df[col] = df["subject_id"] if default is None else default
        missing_labels = [name for name in labels if name not in df.columns]
        if missing_labels:
            raise StoreError(
                f"labels {missing_labels} are declared but not columns of the subjects table"
            )
        front = ["subject_id", "participant_id", "dataset", "site"]
        df = df[front + [c for c in df.columns if c not in front]]
        with atomic_path(self.root / "subjects.csv") as tmp:
            df.to_csv(tmp, index=False)
        trs = [records[s].tr for s in df["subject_id"]]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "grid": list(self.grid),
            "voxel_size": self.voxel_size,
            "affine": self.affine.tolist(),
            "space": "MNI152",
            "layout": self.layout,
            "axcodes": get_layout(self.layout).axcodes,
            "template": self.template,
            "normalisation": self.normalisation,
            "tr_range": [float(min(trs)), float(max(trs))],
            "labels": labels,
            "datasets": sorted(df["dataset"].astype(str).unique().tolist()),
            "dataset_info": dataset_info or {},
            "num_subjects": len(df),
            "subjects": {s: asdict(records[s]) for s in df["subject_id"]},
        }
        from swiftlib import __version__

        manifest["swiftlib_version"] = __version__
        atomic_write_json(self.root / "manifest.json", manifest)
        return open_store(self.root)


class SubjectStore(StoreIntegrity):
    """Read access to a store. Use :func:`open_store`.

    HDF5 handles open lazily and per process, so a store object can be handed to
    DataLoader workers (fork or spawn) safely.
    """

    def __init__(self, root: Path, manifest: dict, subjects):
        self.root = Path(root)
        self.manifest = manifest
        self.subjects = subjects  # DataFrame indexed by subject_id
        self.verify_on_read = True  # checksum of each subject file when first opened
        self._handles: dict[str, object] = {}
        self._packs: dict[str, tuple] = {}  # subject -> (values memmap | None, voxels, bg)
        self._pid = os.getpid()
        # file versions whose sha256 is known: (path, size, mtime_ns, inode) -> digest; pickled
        # with the store, so DataLoader workers do not hash again what the main process did
        self._hashes: dict[tuple[str, int, int, int], str] = {}
        self._disk_cache: dict | None = None  # STORE/.verified.json, read when first needed

    # -- metadata -------------------------------------------------------------------------
    @property
    def subject_ids(self) -> list[str]:
        return list(self.subjects.index)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.manifest["grid"])

    @property
    def voxel_size(self) -> float:
        return float(self.manifest["voxel_size"])

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.manifest["affine"], dtype=float)

    @property
    def normalisation(self) -> str:
        return self.manifest["normalisation"]

    @property
    def layout(self) -> str:
        """The voxel convention (``mni_ras`` for stores written before layouts existed)."""
        return self.manifest.get("layout", DEFAULT_LAYOUT)

    @property
    def template(self) -> str:
        """The MNI template of the data, or ``unknown``."""
        return self.manifest.get("template", UNKNOWN_TEMPLATE)

    @property
    def labels(self) -> dict:
        return dict(self.manifest.get("labels", {}))

    @property
    def datasets(self) -> list[str]:
        return list(self.manifest.get("datasets", []))

    def _record(self, subject_id: str) -> dict:
        try:
            return self.manifest["subjects"][subject_id]
        except KeyError:
            raise KeyError(self._unknown(subject_id)) from None

    def _unknown(self, subject_id) -> str:
        from swiftlib.utils.validation import did_you_mean

        hint = did_you_mean(subject_id, self.subject_ids, n=3)
        count = len(self.subject_ids)
        return f"subject {subject_id!r} is not in store {self.root} ({count} subjects){hint}"

    def num_frames(self, subject_id: str) -> int:
        return int(self._record(subject_id)["num_frames"])

    def tr(self, subject_id: str) -> float:
        return float(self._record(subject_id)["tr"])

    def path(self, subject_id: str) -> Path:
        return self.root / self._record(subject_id)["file"]

    def contract(self) -> dict:
        """The input contract a model trained on this store expects (saved with checkpoints):
        grid, voxel size, space, layout, template, normalisation, TR range and confound
        denoising (``"none"`` when the scans were not denoised)."""
        config = (self.manifest.get("dataset_info") or {}).get("config") or {}
        return {
            "grid": list(self.grid),
            "voxel_size": self.voxel_size,
            "space": self.manifest.get("space", "MNI152"),
            "layout": self.layout,
            "template": self.template,
            "normalisation": self.normalisation,
            "tr_range": list(self.manifest["tr_range"]),
            "denoise": config.get("denoise") or "none",
        }

    # -- data -----------------------------------------------------------------------------
    def _file(self, subject_id: str):
        if os.getpid() != self._pid:  # forked into a worker: never share HDF5 handles
            self._handles, self._packs, self._pid = {}, {}, os.getpid()
        f = self._handles.get(subject_id)
        if f is None:
            if self.verify_on_read:
                self.verify_subjects([subject_id])
            h5py = _h5()
            with self._reading(subject_id, "the file"):
                f = h5py.File(self.path(subject_id), "r")
            self._handles[subject_id] = f
        return f

    def _pack(self, subject_id: str) -> tuple:
        """``(values, voxels, background)`` of a subject: ``values`` a read-only memory map
        (T, V) of a format-2 file, None for a format-1 file (dense ``bold``; every voxel).
        A format-2 file's HDF5 handle is closed again once its map is made, if only this
        opened it: one open file per subject, as before (the map keeps its own descriptor)."""
        if os.getpid() != self._pid:  # forked into a worker: never share handles or maps
            self._handles, self._packs, self._pid = {}, {}, os.getpid()
        pack = self._packs.get(subject_id)
        if pack is not None:
            return pack
        was_open = subject_id in self._handles
        f = self._file(subject_id)
        T = self.num_frames(subject_id)
        with self._reading(subject_id, "the stored voxels"):
            if "bold_packed" not in f:  # format 1
                voxels = np.arange(int(np.prod(self.grid)), dtype=np.int64)
                pack = (None, voxels, np.zeros(T, np.float16))
            else:
                dset = f["bold_packed"]
                voxels = f["voxels"][...].astype(np.int64)
                background = f["background"][...]
                V = len(voxels)
                if dset.shape != (T, V) or dset.dtype != np.dtype("<f2") or dset.chunks:
                    raise ValueError(
                        f"'bold_packed' is {dset.shape} {dset.dtype} chunks={dset.chunks}; "
                        f"expected ({T}, {V}) little-endian float16, contiguous"
                    )
                offset = dset.id.get_offset()
                values = (
                    np.zeros((T, 0), np.float16)
                    if offset is None  # no stored voxel: nothing allocated
                    else np.memmap(
                        self.path(subject_id), np.float16, mode="r", offset=offset, shape=(T, V)
                    )
                )
                pack = (values, voxels, background)
        pack[1].flags.writeable = False
        self._packs[subject_id] = pack
        if pack[0] is not None and not was_open:
            self._handles.pop(subject_id).close()
        return pack

    def _frames(self, subject_id: str, start: int, length: int, stride: int) -> slice:
        T = self.num_frames(subject_id)
        stop = start + (length - 1) * stride + 1
        if start < 0 or length < 1 or stride < 1 or stop > T:
            raise IndexError(
                f"{subject_id}: window start={start}, length={length}, stride={stride} needs "
                f"frames [{start}, {stop}); the subject has {T} frames"
            )
        return slice(start, stop, stride)

    def stored_voxels(self, subject_id: str) -> np.ndarray:
        """(V,) flat C-order indices of the voxels a subject's file stores (read-only; every
        voxel for a format-1 file)."""
        return self._pack(subject_id)[1]

    def read_window_packed(
        self, subject_id: str, start: int, length: int, stride: int = 1, out=None
    ) -> PackedFrames:
        """Frames ``start, start+stride, …`` (``length`` of them) as stored (a copy of one
        contiguous slice): :class:`PackedFrames` with ``values`` (length, V) float16 —
        ``out`` when given (a C-contiguous float16 array of that shape, e.g. a shared-memory
        buffer a DataLoader worker sends on without another copy)."""
        t = self._frames(subject_id, start, length, stride)
        values, voxels, background = self._pack(subject_id)
        shape = (length, len(voxels))
        if out is None:
            out = np.empty(shape, np.float16)
        elif out.shape != shape or out.dtype != np.float16 or not out.flags.c_contiguous:
            raise ValueError(
                f"out: {out.dtype} {out.shape}; expected a C-contiguous float16 array {shape}"
            )
        with self._reading(subject_id, f"frames [{t.start}, {t.stop}) of the bold data"):
            if values is None:  # format 1: the dense window, every voxel
                dense = self._file(subject_id)["bold"][:, :, :, t]  # (D, H, W, L)
                out[...] = dense.reshape(-1, length).T  # (L, N)
            else:
                out[...] = values[t]  # (L, V), one contiguous read
        return PackedFrames(out, voxels, np.ascontiguousarray(background[t]))

    def read_window(self, subject_id: str, start: int, length: int, stride: int = 1) -> np.ndarray:
        """Frames ``start, start+stride, …`` (``length`` of them): float16 (D, H, W, length)."""
        t = self._frames(subject_id, start, length, stride)
        if self._pack(subject_id)[0] is None:  # format 1
            f = self._file(subject_id)
            with self._reading(subject_id, f"frames [{t.start}, {t.stop}) of 'bold'"):
                return f["bold"][:, :, :, t]
        return scatter_frames(
            *self.read_window_packed(subject_id, start, length, stride), self.grid
        )

    def read_subject(self, subject_id: str) -> np.ndarray:
        """Every frame: float16 (D, H, W, T)."""
        return self.read_window(subject_id, 0, self.num_frames(subject_id))

    def mask(self, subject_id: str) -> np.ndarray:
        f = self._file(subject_id)
        with self._reading(subject_id, "'mask'"):
            return f["mask"][...].astype(bool)

    def brain_mask(self, how: str = "union") -> np.ndarray:
        """Store-level brain mask over all subjects: ``union`` or ``intersection``."""
        masks = (self.mask(s) for s in self.subject_ids)
        out = next(masks).copy()
        for m in masks:
            out = (out | m) if how == "union" else (out & m)
        return out

    def geometry(self, subject_id: str) -> StoreGeometry:
        f = self._file(subject_id)
        with self._reading(subject_id, "the 'geometry' attribute"):
            return StoreGeometry.from_dict(json.loads(f.attrs["geometry"]))

    def norm_stats(self, subject_id: str) -> dict:
        f = self._file(subject_id)
        with self._reading(subject_id, "the 'norm_stats' attribute"):
            return json.loads(f.attrs["norm_stats"])

    def close(self) -> None:
        for f in self._handles.values():
            try:
                f.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._handles, self._packs = {}, {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"], state["_packs"] = {}, {}
        state["_disk_cache"] = None  # workers need only the verified hashes
        return state

    def __len__(self) -> int:
        return len(self.subjects)

    def __repr__(self) -> str:
        return (
            f"SubjectStore({str(self.root)!r}, subjects={len(self)}, grid={self.grid}, "
            f"voxel_size={self.voxel_size} mm, layout={self.layout!r}, template={self.template!r}, "
            f"normalisation={self.normalisation!r}, "
            f"labels={list(self.labels)})"
        )

    def summary(self) -> dict:
        frames = [self.num_frames(s) for s in self.subject_ids]
        total_bytes = sum(int(r["bytes"]) for r in self.manifest["subjects"].values())
        return {
            "store": str(self.root),
            "subjects": len(self),
            "datasets": self.datasets,
            "sites": sorted(self.subjects["site"].astype(str).unique().tolist()),
            "grid": list(self.grid),
            "voxel_size_mm": self.voxel_size,
            "layout": self.layout,
            "template": self.template,
            "normalisation": self.normalisation,
            "tr_range_s": self.manifest["tr_range"],
            "frames_min_max": [min(frames), max(frames)],
            "labels": self.labels,
            "bytes_on_disk": total_bytes,
        }


def open_store(root, verify: str = "size", verify_on_read: bool = True) -> SubjectStore:
    """Open and validate a store.

    ``verify``: ``"size"`` (files exist with the recorded size; fast), ``"checksum"``
    (sha256 of every file now, through the checksum cache) or ``"none"``.
    ``verify_on_read``: check a subject file's sha256 the first time it is opened (cached;
    see the module docstring). Missing or corrupt subjects are named in the error.
    """
    import pandas as pd

    root = Path(root)
    mpath = root / "manifest.json"
    if not mpath.exists():
        hint = (
            " (a preprocessing run may not have finished; rerun it to resume)"
            if (root / ".progress.jsonl").exists()
            else ""
        )
        raise StoreError(f"{root}: no manifest.json — not a swiftlib store{hint}")
    try:
        manifest = read_json(mpath)
    except json.JSONDecodeError as e:
        raise StoreError(f"{mpath}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{mpath}: format={manifest.get('format')!r}; expected {FORMAT!r}")
    if int(manifest.get("format_version", -1)) > FORMAT_VERSION:
        raise StoreError(
            f"{mpath}: format_version={manifest.get('format_version')} is newer than this "
            f"swiftlib understands ({FORMAT_VERSION}); upgrade swiftlib"
        )
    if verify not in ("size", "checksum", "none"):
        raise ValueError(f"verify={verify!r}: expected 'size', 'checksum' or 'none'")
    spath = root / "subjects.csv"
    if not spath.exists():
        raise StoreError(f"{root}: subjects.csv is missing")
    subjects = pd.read_csv(
        spath, dtype={"subject_id": str, "participant_id": str, "site": str, "dataset": str}
    )
    if "subject_id" not in subjects.columns:
        raise StoreError(
            f"{spath}: no 'subject_id' column (columns {list(subjects.columns)}); the store's "
            "subjects table must keep the columns preprocessing wrote"
        )
    subjects = check_subjects_table(spath, subjects, manifest.get("labels", {}))
    subjects = subjects.set_index("subject_id", drop=False)
    missing, corrupt = [], []
    if verify != "none":
        for sid, rec in manifest["subjects"].items():
            p = root / rec["file"]
            if not p.exists():
                missing.append(sid)
            elif p.stat().st_size != rec["bytes"]:
                corrupt.append(sid)
    if missing or corrupt:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if corrupt:
            parts.append(f"corrupt (size/checksum differs from manifest): {', '.join(corrupt)}")
        raise StoreError(f"store {root}: {'; '.join(parts)}. Re-run preprocessing to rewrite them.")
    not_in_table = sorted(set(manifest["subjects"]) - set(subjects.index))
    if not_in_table:
        raise StoreError(
            f"store {root}: subjects {not_in_table} are in manifest.json but not subjects.csv"
        )
    store = SubjectStore(root, manifest, subjects)
    store.verify_on_read = bool(verify_on_read)
    if verify == "checksum":
        store.verify_subjects(list(manifest["subjects"]))
    return store
