"""Windows of consecutive fMRI frames from a store: the samples every model sees.

A *window* is ``sequence_length`` frames ``start, start + s, …, start + (L-1)·s`` of one
subject (``s = stride_within_seq``), returned as ``x: (1, D, H, W, T)`` with ``T = L``
(time last, as SwiFT v1). Window starts step by ``stride_between_seq`` — a **fraction of
the window's duration** ``L·s``, as in SwiFT v1: ``step = max(round(f · L · s), 1)``, so
``1.0`` gives back-to-back windows and ``0.5`` half-overlapping ones.

Modes:
    ``train``: by default every window of every subject (SwiFT v1 behaviour; shuffle with
        the DataLoader). With ``windows_per_subject=k`` an epoch instead holds ``k``
        windows per subject, each drawn at random from that subject's windows with torch's
        RNG (seeded per worker and epoch by the DataLoader, so seed it with
        ``lightning.seed_everything``). Starts stay on the ``stride_between_seq`` grid: a
        small stride (e.g. ``1 / (L·s)``, a step of one frame) makes every frame a possible
        start — the time-shift augmentation a small cohort needs against memorising its
        subjects; set ``eval_stride_between_seq`` to keep evaluation windows back to back.
        Augmentation (``augment``) runs only in this mode.
    ``eval``: every window of every subject in order (subject, start), so predictions can
        be averaged per subject (:meth:`WindowDataset.index` says which window is which).

Packed windows (``packed=True``): a window travels as the store keeps it — the brain voxels,
time-major, ``(L, V)`` float16, about a quarter of the dense window's bytes at 96³ — with its
voxel indices and per-frame background (:class:`PackedWindow`); :func:`collate_samples`
concatenates them (:class:`PackedBatch`), and :func:`unpack_batch` scatters them onto the
grid as late as possible: after the host-to-device copy (``FMRIDataModule`` does it in
``on_after_batch_transfer``), so neither the workers, the worker→main transfer nor the copy
to the GPU move the background. The values are bit-identical to the dense path.

Labels come from the store's ``subjects`` table and manifest (``store.labels``); subjects
with a missing label are dropped and the count is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from swiftlib.utils.validation import did_you_mean

__all__ = [
    "Batch",
    "PackedBatch",
    "PackedWindow",
    "Sample",
    "WindowDataset",
    "collate_samples",
    "unpack_batch",
    "unpack_windows",
    "window_starts",
]

log = logging.getLogger(__name__)


class PackedWindow(NamedTuple):
    """One window as stored: ``values`` (L, V) float16, ``voxels`` (V,) int32 flat C-order
    indices into the (D, H, W) grid, ``background`` (L,) float16 (every other voxel, per
    frame), ``grid`` (D, H, W)."""

    values: torch.Tensor
    voxels: torch.Tensor
    background: torch.Tensor
    grid: tuple[int, int, int]


class PackedBatch(NamedTuple):
    """Packed windows of a batch, concatenated: ``values`` (L, ΣV) float16, ``voxels`` (ΣV,)
    int32, ``counts`` (B,) voxels per window, ``background`` (B, L) float16, ``grid``."""

    values: torch.Tensor
    voxels: torch.Tensor
    counts: torch.Tensor
    background: torch.Tensor
    grid: tuple[int, int, int]


class Sample(NamedTuple):
    """One window. ``x``: (1, D, H, W, T), or a :class:`PackedWindow`; ``y``: () label (int64
    class, float32 value, or NaN)."""

    x: torch.Tensor | PackedWindow
    y: torch.Tensor
    subject_id: str
    dataset: str
    window_start: int


class Batch(NamedTuple):
    """A collated batch. ``x``: (B, 1, D, H, W, T) or a :class:`PackedBatch` (see
    :func:`unpack_batch`); ``y``: (B,); ``window_start``: (B,)."""

    x: torch.Tensor | PackedBatch
    y: torch.Tensor
    subject_id: list[str]
    dataset: list[str]
    window_start: torch.Tensor


def collate_samples(samples: Sequence[Sample]) -> Batch:
    """Stack :class:`Sample` s into a :class:`Batch` (use as the DataLoader ``collate_fn``)."""
    if len(samples) == 0:
        raise ValueError("collate_samples got an empty list of samples")
    packed = [isinstance(s.x, PackedWindow) for s in samples]
    if any(packed) and not all(packed):
        raise ValueError(
            f"collate_samples: {sum(packed)} of {len(samples)} samples are packed windows; a "
            "batch is either all packed or all dense (WindowDataset(packed=...) for every dataset)"
        )
    return Batch(
        x=_collate_packed([s.x for s in samples]) if packed[0] else _stack([s.x for s in samples]),
        y=torch.stack([s.y for s in samples]),  # (B,)
        subject_id=[s.subject_id for s in samples],
        dataset=[s.dataset for s in samples],
        window_start=torch.tensor([s.window_start for s in samples], dtype=torch.long),  # (B,)
    )


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; inside a DataLoader worker, straight into shared memory (as torch's
    ``default_collate`` does), which saves one copy of every batch on its way to the main
    process."""
    out = None
    if torch.utils.data.get_worker_info() is not None:
        elem = tensors[0]
        storage = elem._typed_storage()._new_shared(
            sum(t.numel() for t in tensors), device=elem.device
        )
        out = elem.new(storage).resize_(len(tensors), *elem.shape)
    return torch.stack(tensors, 0, out=out)


def _empty(shape, dtype: torch.dtype, shared: bool) -> torch.Tensor:
    """``torch.empty``; with ``shared``, in shared memory (what a DataLoader worker sends)."""
    if not shared:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device="cpu")
    return elem.new(storage).resize_(shape)


def _shared_cat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat``; inside a DataLoader worker, straight into shared memory (as ``_stack``),
    and a single tensor already there is sent as it is."""
    if torch.utils.data.get_worker_info() is None:
        return torch.cat(tensors, dim)
    if len(tensors) == 1 and tensors[0].is_shared():
        return tensors[0]
    shape = list(tensors[0].shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.cat(tensors, dim, out=_empty(shape, tensors[0].dtype, True))


def _collate_packed(windows: list[PackedWindow]) -> PackedBatch:
    grid = tuple(windows[0].grid)
    lengths = {w.values.shape[0] for w in windows}
    if len(lengths) > 1 or any(tuple(w.grid) != grid for w in windows):
        raise ValueError(
            f"collate_samples: packed windows of {sorted(lengths)} frames on grids "
            f"{sorted({tuple(w.grid) for w in windows})}; a batch needs one length and one grid"
        )
    return PackedBatch(
        values=_shared_cat([w.values for w in windows], 1),  # (L, ΣV)
        voxels=_shared_cat([w.voxels for w in windows], 0),  # (ΣV,)
        counts=torch.tensor([w.values.shape[1] for w in windows], dtype=torch.long),  # (B,)
        background=torch.stack([w.background for w in windows]),  # (B, L)
        grid=grid,
    )


def unpack_windows(x: PackedBatch, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Scatter packed windows onto the grid, on their device: (B, 1, D, H, W, L) ``dtype``.

    Bit-identical to reading dense windows (``WindowDataset(packed=False)``) and converting
    them to ``dtype``."""
    D, H, W = (int(g) for g in x.grid)
    N = D * H * W
    B, L = x.background.shape
    if x.values.shape[1] != int(x.voxels.shape[0]):
        raise ValueError(
            f"packed batch: values hold {x.values.shape[1]} voxels but voxels lists "
            f"{x.voxels.shape[0]}; expected equal"
        )
    out = x.background.to(dtype)[:, None, :].expand(B, N, L).contiguous()  # (B, N, L)
    offsets = torch.arange(B, device=x.voxels.device, dtype=torch.long) * N  # (B,)
    rows = x.voxels.long() + torch.repeat_interleave(
        offsets, x.counts.to(offsets.device), output_size=int(x.voxels.shape[0])
    )  # (ΣV,) rows of (B*N, L)
    out.view(B * N, L).index_copy_(0, rows, x.values.t().contiguous().to(dtype))  # (ΣV, L)
    return out.view(B, 1, D, H, W, L)  # (B, 1, D, H, W, L)


def unpack_batch(batch, dtype: torch.dtype = torch.float32):
    """``batch`` with its packed windows on the grid (:func:`unpack_windows`); a batch that is
    not packed comes back unchanged. Call it after the batch reached its device (Lightning:
    ``on_after_batch_transfer``), so only the brain voxels travel."""
    if isinstance(batch, Batch) and isinstance(batch.x, PackedBatch):
        return batch._replace(x=unpack_windows(batch.x, dtype))
    return batch


def window_starts(
    num_frames: int,
    sequence_length: int,
    stride_between_seq: float = 1.0,
    stride_within_seq: int = 1,
) -> np.ndarray:
    """All window starts of a run of ``num_frames`` frames (see the module docstring)."""
    span = (sequence_length - 1) * stride_within_seq + 1  # frames a window touches
    step = max(round(stride_between_seq * sequence_length * stride_within_seq), 1)
    if num_frames < span:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, num_frames - span + 1, step, dtype=np.int64)


class WindowDataset(Dataset):
    """Windows of ``sequence_length`` frames from subjects of a :class:`SubjectStore`.

    Args:
        store: an open store (``open_store``).
        subject_ids: subjects to use (default: all, in store order).
        sequence_length: frames per window (T of the model input).
        stride_between_seq: step between window starts as a fraction of the window's
            duration ``sequence_length · stride_within_seq`` (SwiFT v1 convention).
        stride_within_seq: take every ``s``-th frame inside a window.
        label: a label name declared in the store, or None (``y`` is NaN; pretraining).
        mode: ``"train"`` or ``"eval"`` (module docstring).
        windows_per_subject: train mode only; ``k`` windows per subject per epoch, drawn
            at random from the subject's windows, instead of all windows.
        transform: callable on ``x`` (1, D, H, W, T), applied in both modes (deterministic
            preprocessing such as padding).
        augment: callable on ``x`` (1, D, H, W, T), train mode only (e.g. ``FrameAugment``).
        dtype: dtype of ``x`` (the store holds float16; the default float32 suits CPU).
        packed: return windows as stored (:class:`PackedWindow`, float16 whatever ``dtype``;
            see the module docstring); needs no ``transform`` and no ``augment`` (they work on
            the grid).
    """

    def __init__(
        self,
        store,
        subject_ids: Sequence[str] | None = None,
        sequence_length: int = 20,
        stride_between_seq: float = 1.0,
        stride_within_seq: int = 1,
        label: str | None = None,
        mode: str = "train",
        windows_per_subject: int | None = None,
        transform: Callable | None = None,
        augment: Callable | None = None,
        dtype: torch.dtype = torch.float32,
        packed: bool = False,
    ):
        if packed and (transform is not None or augment is not None):
            raise ValueError(
                "packed=True with a transform or augment: both work on windows on the grid, "
                "packed windows are scattered onto it only after the DataLoader. Use "
                "packed=False with transforms or augmentation"
            )
        if mode not in ("train", "eval"):
            raise ValueError(f"mode={mode!r}: expected 'train' or 'eval'")
        if int(sequence_length) < 1:
            raise ValueError(
                f"sequence_length={sequence_length}: expected a positive number of frames"
            )
        if int(stride_within_seq) < 1:
            raise ValueError(f"stride_within_seq={stride_within_seq}: expected an integer >= 1")
        if not stride_between_seq > 0:
            raise ValueError(
                f"stride_between_seq={stride_between_seq}: expected a positive fraction of the "
                "window duration (1.0 = back-to-back windows, 0.5 = half overlap)"
            )
        if windows_per_subject is not None:
            if mode != "train":
                raise ValueError(
                    "windows_per_subject applies to mode='train' only; evaluation always "
                    "enumerates every window so predictions can be averaged per subject"
                )
            if int(windows_per_subject) < 1:
                raise ValueError(
                    f"windows_per_subject={windows_per_subject}: expected an integer >= 1 or None"
                )
        if augment is not None and mode != "train":
            raise ValueError(
                "augment was given with mode='eval'; augmentation is never applied to evaluation "
                "data. Pass augment only to the training dataset"
            )
        self.store = store
        self.sequence_length = int(sequence_length)
        self.stride_between_seq = float(stride_between_seq)
        self.stride_within_seq = int(stride_within_seq)
        self.label = label
        self.mode = mode
        self.windows_per_subject = None if windows_per_subject is None else int(windows_per_subject)
        self.transform = transform
        self.augment = augment
        self.dtype = dtype
        self.packed = bool(packed)
        self._voxels: dict[str, torch.Tensor] = {}  # subject -> (V,) int32, packed mode

        ids = list(store.subject_ids) if subject_ids is None else [str(s) for s in subject_ids]
        self._check_known(ids)
        self.label_task: str | None = None
        self.num_classes: int | None = None
        values = np.full(len(ids), np.nan)
        if label is not None:
            ids, values = self._labels_for(ids)
        self.subject_ids: list[str] = ids
        self._values = values  # (S,) label per subject
        table = store.subjects
        self._datasets = [
            str(table.loc[s, "dataset"]) if "dataset" in table.columns else "unknown" for s in ids
        ]
        self._build_index()

    # -- construction ------------------------------------------------------------------------
    def _check_known(self, ids):
        known = set(self.store.subject_ids)
        unknown = [s for s in ids if s not in known]
        if unknown:
            hint = did_you_mean(unknown[0], known, n=3)
            raise KeyError(
                f"{len(unknown)} subject(s) are not in store {self.store.root}: "
                f"{unknown[:10]}{hint}"
            )

    def _labels_for(self, ids):
        labels = self.store.labels
        if self.label not in labels:
            raise KeyError(
                f"label {self.label!r} is not declared in store {self.store.root}; "
                f"valid labels: {sorted(labels) or 'none (use label=None for pretraining)'}"
            )
        spec = labels[self.label]
        self.label_task = spec["task"]
        self.num_classes = spec.get("num_classes")
        table = self.store.subjects
        if self.label not in table.columns:
            raise KeyError(
                f"label {self.label!r} is declared but is not a column of "
                f"{self.store.root}/subjects.csv"
            )
        values = table.loc[ids, self.label].to_numpy(dtype=float) if ids else np.zeros(0)
        missing = np.isnan(values)
        if missing.any():
            dropped = [s for s, m in zip(ids, missing, strict=True) if m]
            log.warning(
                "label %r: dropping %d of %d subjects with no value (%s%s)",
                self.label,
                len(dropped),
                len(ids),
                ", ".join(dropped[:5]),
                " …" if len(dropped) > 5 else "",
            )
            if missing.all():
                raise ValueError(
                    f"label {self.label!r}: none of the {len(ids)} requested subjects has a value; "
                    "nothing to train or evaluate on"
                )
        keep = ~missing
        return [s for s, k in zip(ids, keep, strict=True) if k], values[keep]

    def _build_index(self):
        L, s = self.sequence_length, self.stride_within_seq
        span = (L - 1) * s + 1  # frames one window touches
        step = max(round(self.stride_between_seq * L * s), 1)
        frames = np.array(
            [self.store.num_frames(sid) for sid in self.subject_ids], dtype=np.int64
        )  # (S,)
        short = frames < span
        if short.any():
            bad = [
                f"{sid} ({t} frames)"
                for sid, t, b in zip(self.subject_ids, frames, short, strict=True)
                if b
            ]
            raise ValueError(
                f"{len(bad)} subject(s) have fewer frames than one window needs ({span} = "
                f"sequence_length {L} with stride_within_seq {s}): {', '.join(bad[:10])}. Use a "
                "shorter sequence_length or leave these subjects out"
            )
        counts = (frames - span) // step + 1  # (S,) windows per subject
        offsets = (
            np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
        )
        subj = np.repeat(np.arange(len(counts)), counts)  # (N,) subject index of each window
        starts = (np.arange(int(counts.sum())) - np.repeat(offsets, counts)) * step  # (N,)
        self.frames, self.step, self.span = frames, step, span
        self._counts, self._offsets = counts, offsets
        self._win_subject, self._win_start = subj.astype(np.int64), starts.astype(np.int64)
        if len(self.subject_ids) == 0:
            log.warning("WindowDataset (%s) has no subjects", self.mode)

    # -- introspection ------------------------------------------------------------------------
    @property
    def index(self):
        """DataFrame of every window: ``subject_id``, ``start`` (eval-mode item order)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "subject_id": np.asarray(self.subject_ids, dtype=object)[self._win_subject]
                if len(self._win_subject)
                else [],
                "start": self._win_start,
            }
        )

    @property
    def num_windows(self) -> int:
        """Every window of every subject (the eval-mode length)."""
        return int(self._counts.sum()) if len(self._counts) else 0

    @property
    def windows_by_subject(self) -> dict[str, int]:
        return {sid: int(c) for sid, c in zip(self.subject_ids, self._counts, strict=True)}

    def subject_label(self, subject_id: str) -> float:
        return float(self._values[self.subject_ids.index(subject_id)])

    @property
    def subject_labels(self) -> np.ndarray:
        """(S,) label per subject, in ``subject_ids`` order (NaN without a label)."""
        return self._values.copy()

    def __len__(self) -> int:
        if self.mode == "train" and self.windows_per_subject is not None:
            return len(self.subject_ids) * self.windows_per_subject
        return self.num_windows

    # -- items ---------------------------------------------------------------------------------
    def locate(self, i: int, generator: torch.Generator | None = None) -> tuple[int, int]:
        """``(subject index, start frame)`` of item ``i``. With ``windows_per_subject`` the
        window is drawn at random, from ``generator`` (default: torch's global RNG)."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"window {i} out of range for a dataset of {n} windows")
        if self.mode == "train" and self.windows_per_subject is not None:
            si = i // self.windows_per_subject
            # random window
            k = int(torch.randint(int(self._counts[si]), (1,), generator=generator).item())
            return si, int(self._win_start[self._offsets[si] + k])
        return int(self._win_subject[i]), int(self._win_start[i])

    def __getitem__(self, i: int) -> Sample:
        return self.read(*self.locate(i))

    def read(self, subject_index: int, start: int) -> Sample:
        """The window of subject ``subject_ids[subject_index]`` starting at frame ``start`` (any
        frame with room for the window, on the stride grid or not), transformed, augmented in
        train mode, with its label."""
        si = int(subject_index)
        if not 0 <= start <= self.frames[si] - self.span:
            raise IndexError(
                f"start {start} out of range for {self.subject_ids[si]} ({self.frames[si]} frames, "
                f"a window spans {self.span}): expected 0 ≤ start ≤ {self.frames[si] - self.span}"
            )
        sid = self.subject_ids[si]
        if self.packed:
            return self._sample(si, self._read_packed(sid, start), start)
        arr = self.store.read_window(
            sid, start, self.sequence_length, self.stride_within_seq
        )  # (D, H, W, T) fp16
        x = (
            torch.from_numpy(np.ascontiguousarray(arr)).to(self.dtype).unsqueeze(0)
        )  # (1, D, H, W, T)
        if self.transform is not None:
            x = self.transform(x)
        if self.augment is not None and self.mode == "train":
            x = self.augment(x)
        return self._sample(si, x, start)

    def _read_packed(self, sid: str, start: int) -> PackedWindow:
        """In a DataLoader worker the values are read straight into shared memory and the
        subject's voxel indices are shared once, so a batch of one window leaves the worker
        without another copy (:func:`collate_samples`)."""
        shared = torch.utils.data.get_worker_info() is not None
        voxels = self._voxels.get(sid)
        if voxels is None:  # once per subject (and worker)
            voxels = torch.from_numpy(self.store.stored_voxels(sid).astype(np.int32))  # (V,)
            self._voxels[sid] = voxels.share_memory_() if shared else voxels
        values = _empty((self.sequence_length, voxels.numel()), torch.float16, shared)  # (L, V)
        frames = self.store.read_window_packed(
            sid, start, self.sequence_length, self.stride_within_seq, out=values.numpy()
        )
        return PackedWindow(
            values, voxels, torch.from_numpy(frames.background), tuple(self.store.grid)
        )

    def _sample(self, si: int, x, start: int) -> Sample:
        sid = self.subject_ids[si]
        value = self._values[si]
        if self.label_task == "classification":
            y = torch.tensor(int(value), dtype=torch.long)
        else:
            y = torch.tensor(value, dtype=torch.float32)
        return Sample(x=x, y=y, subject_id=sid, dataset=self._datasets[si], window_start=start)

    def __repr__(self) -> str:
        return (
            f"WindowDataset(mode={self.mode!r}, subjects={len(self.subject_ids)}, "
            f"windows={len(self)}, sequence_length={self.sequence_length}, step={self.step}, "
            f"label={self.label!r}{', packed' if self.packed else ''})"
        )
