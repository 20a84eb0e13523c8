"""Loader benchmark: the swiftlib store vs the SwiFT v1 one-file-per-frame layout.

Same synthetic cohort, same windows, same DataLoader settings, measured in one run:

* **store**: one HDF5 file per subject written by ``StoreWriter`` (its default chunking and
  codec), read through ``WindowDataset``.
* **SwiFT v1**: ``<subject>/frame_{i}.pt`` (one fp16 ``torch.save`` per frame, plus
  ``voxel_mean.pt``/``voxel_std.pt`` as the public preprocessing writes), read by a Dataset
  that ``torch.load`` s each frame of a window, ``unsqueeze(0)`` and concatenates on the time
  axis, as the public ``datasets.py`` does (its fixed padding is left out: the data are
  already on the 96³ grid).

Reported: windows read per second (20-frame windows, 2 workers, batch 1, shuffled), warm
(files in the page cache) and cold (each file evicted with ``posix_fadvise(DONTNEED)``
first), bytes on disk, and the two ratios. The fp16 round trip through the store is
asserted to be exact, and the two layouts are asserted to return identical windows.

    python benchmarks/bench_loader.py            # 8 subjects × 100 frames at 96³
    python benchmarks/bench_loader.py --quick    # small grid, seconds
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swiftlib.data.geometry import StoreGeometry  # noqa: E402
from swiftlib.data.store import StoreWriter, chunk_frames_for, open_store  # noqa: E402
from swiftlib.data.windows import WindowDataset, collate_samples, window_starts  # noqa: E402


# -- a brain-like synthetic cohort ---------------------------------------------------------------
def brain_mask(grid) -> np.ndarray:
    """An ellipsoid filling the grid like an MNI brain fills 96³ at 2 mm (≈ 26 % of voxels)."""
    D, H, W = grid
    z, y, x = np.ogrid[:D, :H, :W]
    r = (
        ((z - D / 2) / (0.37 * D)) ** 2
        + ((y - H / 2) / (0.45 * H)) ** 2
        + ((x - W / 2) / (0.37 * W)) ** 2
    )
    return r <= 1.0  # (D, H, W)


def subject_bold(grid, num_frames: int, seed: int, mask: np.ndarray) -> np.ndarray:
    """Smooth network maps × band-limited time courses + AR(1) noise, z-scored in the brain,
    background = in-brain minimum (the SwiFT normalisation). float16 (D, H, W, T)."""
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    D, H, W = grid
    K = 6  # networks
    low = torch.from_numpy(rng.standard_normal((1, K, 6, 6, 6)).astype(np.float32))
    maps = F.interpolate(low, size=grid, mode="trilinear", align_corners=False)[
        0
    ].numpy()  # (K, D, H, W)
    inside = maps[:, mask].T  # (N, K) in-brain voxels
    t = np.arange(num_frames) * 0.8
    freqs = rng.uniform(0.01, 0.1, size=K)
    courses = np.sin(
        2 * np.pi * freqs[:, None] * t[None, :] + rng.uniform(0, 6.3, size=(K, 1))
    )  # (K, T)
    signal = inside @ courses  # (N, T)
    noise = rng.standard_normal(signal.shape).astype(np.float32)
    for i in range(1, num_frames):  # AR(1), rho 0.3
        noise[:, i] += 0.3 * noise[:, i - 1]
    vox = (signal + 0.8 * noise).astype(np.float32)  # (N, T)
    vox = (vox - vox.mean()) / vox.std()
    # background = in-brain minimum
    bold = np.full((D, H, W, num_frames), vox.min(), dtype=np.float32)
    bold[mask] = vox
    return bold.astype(np.float16)


# -- the SwiFT v1 layout and Dataset -------------------------------------------------------------
def write_v1(root: Path, sid: str, bold16: np.ndarray) -> None:
    """One fp16 torch.save per frame (``torch.split(data, 1, 3)``: (D, H, W, 1) each), per-subject
    folder, as the SwiFT v1 preprocessing scripts write them."""
    d = root / sid
    d.mkdir(parents=True, exist_ok=True)
    vol = torch.from_numpy(bold16)  # (D, H, W, T) float16
    for i, frame in enumerate(torch.split(vol, 1, 3)):  # (D, H, W, 1) each
        torch.save(frame.clone(), d / f"frame_{i}.pt")
    torch.save(vol.float().mean(3, keepdim=True).half(), d / "voxel_mean.pt")  # (D, H, W, 1)
    torch.save(vol.float().std(3, keepdim=True).half(), d / "voxel_std.pt")


class V1Windows(Dataset):
    """The SwiFT v1 read path: torch.load each frame, unsqueeze(0), cat on dim 4."""

    def __init__(
        self, root: Path, subjects: list[str], sequence_length: int, stride_between_seq: float
    ):
        self.data = []
        for sid in subjects:
            num_frames = len(os.listdir(root / sid)) - 2  # voxel mean & std
            for start in window_starts(num_frames, sequence_length, stride_between_seq):
                self.data.append((sid, root / sid, int(start)))
        self.sequence_length = sequence_length

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        sid, path, start = self.data[i]
        y = [
            torch.load(path / f"frame_{f}.pt").unsqueeze(0)
            for f in range(start, start + self.sequence_length)
        ]
        y = torch.cat(y, dim=4)  # T × (1, D, H, W, 1) -> (1, D, H, W, T)
        return {"fmri_sequence": y, "subject_name": sid, "TR": start}


# -- a candidate store layout (for the recommendation; not the store's API) -----------------------
def write_frame_major(root: Path, sid: str, bold16: np.ndarray) -> None:
    """Same file-per-subject HDF5 + codec as the store, but frame-major (T, D, H, W),
    1 frame/chunk."""
    import h5py

    from swiftlib.data.store import _compression

    root.mkdir(parents=True, exist_ok=True)
    D, H, W, T = bold16.shape
    with h5py.File(root / f"{sid}.h5", "w") as f:
        f.create_dataset(
            "bold",
            data=np.ascontiguousarray(bold16.transpose(3, 0, 1, 2)),  # (T, D, H, W)
            chunks=(1, D, H, W),
            **_compression(),
        )


class FrameMajorWindows(Dataset):
    """Reads (L, D, H, W) contiguous frames; returns a time-last *view* so the transpose is
    fused into the collate copy into shared memory."""

    def __init__(self, root: Path, index: list[tuple[str, int]], sequence_length: int):
        self.root, self.index, self.L, self._files = root, index, sequence_length, {}

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        import h5py
        import hdf5plugin  # noqa: F401

        from swiftlib.data.windows import Sample

        sid, start = self.index[i]
        f = self._files.get(sid) or self._files.setdefault(
            sid, h5py.File(self.root / f"{sid}.h5", "r")
        )
        arr = f["bold"][start : start + self.L]  # (L, D, H, W) float16
        x = torch.from_numpy(arr).permute(1, 2, 3, 0).unsqueeze(0)  # (1, D, H, W, L) view
        return Sample(x, torch.tensor(float("nan")), sid, "bench", start)

    def __getstate__(self):
        return {**self.__dict__, "_files": {}}


# -- measurement ----------------------------------------------------------------------------------
def evict(paths) -> None:
    """Drop these files from the page cache (cold reads), without touching anything else."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def windows_per_second(dataset, num_workers: int, seed: int, collate=None) -> tuple[float, int]:
    loader = DataLoader(
        dataset,
        batch_size=1,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
    )
    it = iter(loader)
    next(it)  # worker start-up is not reading
    t0 = time.perf_counter()
    n = sum(1 for _ in it)  # the remaining windows
    return n / (time.perf_counter() - t0), n


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="small grid (40, 48, 44), 4 subjects × 60 frames"
    )
    ap.add_argument("--subjects", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--stride", type=float, default=0.25, help="stride_between_seq (fraction of 20 frames)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="epochs per layout and cache state")
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "_work" / "loader"))
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args(argv)

    grid = (40, 48, 44) if args.quick else (96, 96, 96)
    num_subjects = args.subjects or (4 if args.quick else 8)
    num_frames = args.frames or (60 if args.quick else 100)
    L = 20
    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    store_dir, v1_dir, fm_dir = work / "store", work / "v1", work / "frame_major"
    torch.set_num_threads(1)

    print(
        f"cohort: {num_subjects} subjects × {num_frames} frames, grid {grid}, fp16; "
        f"store chunk = {chunk_frames_for(grid, num_frames)} frames"
    )
    mask = brain_mask(grid)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    geom = StoreGeometry.build(grid, 2.0, aff, source_shape=grid, source_affine=aff)
    writer = StoreWriter(store_dir, grid=grid, voxel_size=2.0, affine=aff)
    t_store = t_v1 = 0.0
    originals = {}
    for i in range(num_subjects):
        sid = f"sub-{i:04d}"
        bold = subject_bold(grid, num_frames, seed=i, mask=mask)  # (D, H, W, T) float16
        t0 = time.perf_counter()
        writer.write_subject(sid, bold, mask, geom, tr=0.8, norm_stats={"mean": 0.0, "std": 1.0})
        t_store += time.perf_counter() - t0
        t0 = time.perf_counter()
        write_v1(v1_dir, sid, bold)
        t_v1 += time.perf_counter() - t0
        write_frame_major(fm_dir, sid, bold)
        originals[sid] = bold
    import pandas as pd

    store = writer.finalize(pd.DataFrame({"subject_id": list(originals), "dataset": "bench"}))

    # exact fp16 round trip, and both layouts give the same windows
    for sid, bold in originals.items():
        back = open_store(store_dir).read_subject(sid)
        assert back.dtype == np.float16 and np.array_equal(
            back.view(np.uint16), bold.view(np.uint16)
        ), sid
    ours = WindowDataset(
        store, sequence_length=L, stride_between_seq=args.stride, mode="eval", dtype=torch.float16
    )
    theirs = V1Windows(v1_dir, list(originals), L, args.stride)
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for i in (0, len(ours) // 2, len(ours) - 1):
        assert torch.equal(ours[i].x, theirs[i]["fmri_sequence"]), i
    frame_major = FrameMajorWindows(fm_dir, list(ours.index.itertuples(index=False, name=None)), L)
    assert torch.equal(frame_major[1].x, ours[1].x)
    print(
        f"fp16 round trip exact for {num_subjects} subjects; both layouts return identical windows"
    )

    bytes_store = sum(p.stat().st_size for p in files_under(store_dir))
    bytes_v1 = sum(p.stat().st_size for p in files_under(v1_dir))
    bytes_fm = sum(p.stat().st_size for p in files_under(fm_dir))
    raw = num_subjects * num_frames * int(np.prod(grid)) * 2
    print(f"write time: store {t_store:.1f} s, v1 {t_v1:.1f} s")

    train = WindowDataset(
        store, sequence_length=L, stride_between_seq=args.stride, mode="train", dtype=torch.float16
    )
    layouts = (
        ("store", train, store_dir, collate_samples),
        ("v1", theirs, v1_dir, None),
        ("frame-major", frame_major, fm_dir, collate_samples),
    )
    results = {(c, name): [] for c in ("warm", "cold") for name, *_ in layouts}
    for _ in range(args.repeats):  # interleaved, so background load hits every layout alike
        for cache in ("warm", "cold"):
            for name, ds, root, collate in layouts:
                files = files_under(root)
                if cache == "cold":
                    evict(files)
                else:  # warm the page cache with one untimed pass
                    for p in files:
                        p.read_bytes()
                results[(cache, name)].append(
                    windows_per_second(ds, args.workers, seed=0, collate=collate)[0]
                )
    med = {k: float(np.median(v)) for k, v in results.items()}

    print()
    print(
        f"windows per epoch: {len(train)} ({L} frames, stride_between_seq {args.stride}), "
        f"{args.workers} workers, batch 1, shuffled, fp16 windows; median of {args.repeats} epochs"
    )
    for cache in ("warm", "cold"):
        ws, wv, wf = med[(cache, "store")], med[(cache, "v1")], med[(cache, "frame-major")]
        print(
            f"{cache:>5}: store {ws:7.1f} windows/s | SwiFT v1 {wv:7.1f} windows/s | speed ratio "
            f"{ws / wv:5.2f}× || frame-major candidate {wf:7.1f} windows/s ({wf / wv:4.2f}× v1)"
        )
    print(
        f"bytes: store {bytes_store / 1e6:9.1f} MB | SwiFT v1 {bytes_v1 / 1e6:9.1f} MB | "
        f"bytes ratio {bytes_store / bytes_v1:5.3f} (raw fp16 {raw / 1e6:.1f} MB; "
        f"frame-major candidate {bytes_fm / 1e6:.1f} MB)"
    )
    # in-process read cost (no DataLoader): what the layout itself costs per window
    print("in-process, ms per window (median of 10):", end="")
    for name, ds, _, _ in layouts:
        times = []
        for i in np.random.default_rng(0).permutation(len(ds))[:10]:
            t0 = time.perf_counter()
            item = ds[int(i)]
            x = item.x if hasattr(item, "x") else item["fmri_sequence"]
            x.contiguous()
            times.append(time.perf_counter() - t0)
        print(f" {name} {1000 * np.median(times):.1f}", end="")
    print()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
