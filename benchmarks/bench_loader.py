"""Loader benchmark: the swiftlib store vs the SwiFT v1 one-file-per-frame layout.

Same synthetic cohort, same windows, same DataLoader settings, measured interleaved in one run:

* **store, packed**: the format-2 store (one HDF5 file per subject, brain voxels time-major,
  contiguous, memory-mapped) through ``WindowDataset(packed=True)``: batches leave the workers
  as ``(L, V)`` brain voxels and are scattered onto the grid on the model's device
  (``FMRIDataModule.on_after_batch_transfer``; the training default). On a GPU that scatter
  is a few hundred microseconds; here it is left out — what is timed is what the host does.
* **store, packed + CPU scatter**: the same, with ``unpack_batch`` in the main process (what
  CPU training pays: the dense window is built once, serially).
* **store, dense**: the same files through ``WindowDataset(packed=False)`` (the scatter in
  the workers; what augmentation and contrastive pairs use).
* **store format 1**: the previous store (dense ``(D, H, W, T)`` chunks of 4 volumes,
  Blosc-LZ4 + shuffle), dense windows.
* **SwiFT v1**: ``<subject>/frame_{i}.pt`` (one fp16 ``torch.save`` per frame, plus
  ``voxel_mean.pt``/``voxel_std.pt`` as the public preprocessing writes), read by a Dataset
  that ``torch.load`` s each frame of a window, ``unsqueeze(0)`` and concatenates on the time
  axis, as the public ``datasets.py`` does (its fixed padding is left out: the data are
  already on the 96³ grid).

Reported: windows read per second (20-frame windows, 2 workers, batch 1, shuffled), warm
(files in the page cache) and cold (each file evicted with ``posix_fadvise(DONTNEED)``
first; no process keeps a file mapped), bytes on disk, the ratios to SwiFT v1, and per
window in one process: the read alone and a plain memcpy of the same bytes (the physical
limit of a read that has to copy them once). The fp16 round trip through the store is
asserted to be exact, and every layout is asserted to return identical windows.

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
from swiftlib.data.store import StoreWriter, open_store  # noqa: E402
from swiftlib.data.windows import (  # noqa: E402
    WindowDataset,
    collate_samples,
    unpack_batch,
    window_starts,
)


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


def windows_per_second(
    dataset, num_workers: int, seed: int, collate=None, post=None
) -> tuple[float, int]:
    """Windows/s through a DataLoader (batch 1, shuffled); ``post`` runs on each batch in this
    process (the CPU scatter of packed windows)."""
    post = post or (lambda b: b)
    loader = DataLoader(
        dataset,
        batch_size=1,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
    )
    it = iter(loader)
    post(next(it))  # worker start-up is not reading
    t0 = time.perf_counter()
    n = sum(1 for b in it if post(b) is not None)  # the remaining windows
    return n / (time.perf_counter() - t0), n


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]


def median_ms(fn, n: int = 10) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


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
    store_dir, old_dir, v1_dir = work / "store", work / "store_format1", work / "v1"
    torch.set_num_threads(1)

    print(f"cohort: {num_subjects} subjects × {num_frames} frames, grid {grid}, fp16")
    mask = brain_mask(grid)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    geom = StoreGeometry.build(grid, 2.0, aff, source_shape=grid, source_affine=aff)
    writer = StoreWriter(store_dir, grid=grid, voxel_size=2.0, affine=aff)
    old_writer = StoreWriter(old_dir, grid=grid, voxel_size=2.0, affine=aff)
    old_writer.format_version = 1
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
        old_writer.write_subject(sid, bold, mask, geom, tr=0.8, norm_stats={})
        originals[sid] = bold
    import pandas as pd

    table = pd.DataFrame({"subject_id": list(originals), "dataset": "bench"})
    writer.finalize(table)
    old_writer.finalize(table)

    # exact fp16 round trip, and every layout gives the same windows
    check = open_store(store_dir)
    for sid, bold in originals.items():
        back = check.read_subject(sid)
        assert back.dtype == np.float16 and np.array_equal(
            back.view(np.uint16), bold.view(np.uint16)
        ), sid
    kw = dict(sequence_length=L, stride_between_seq=args.stride, dtype=torch.float16)
    ours = WindowDataset(check, mode="eval", **kw)
    packed = WindowDataset(check, mode="eval", packed=True, **kw)
    old = WindowDataset(open_store(old_dir), mode="eval", **kw)
    theirs = V1Windows(v1_dir, list(originals), L, args.stride)
    assert len(ours) == len(theirs) == len(old), (len(ours), len(theirs), len(old))
    for i in (0, len(ours) // 2, len(ours) - 1):
        x = ours[i].x
        assert torch.equal(x, theirs[i]["fmri_sequence"]) and torch.equal(x, old[i].x), i
        batch = unpack_batch(collate_samples([packed[i]]), torch.float16)
        assert torch.equal(batch.x[0], x), i
    print(
        f"fp16 round trip exact for {num_subjects} subjects; all layouts return identical windows"
    )

    # one process: the read alone, against a plain copy of the same bytes
    rng = np.random.default_rng(0)
    picks = [int(i) for i in rng.permutation(len(ours))[:10]]
    sample = packed[picks[0]].x.values.numpy()
    dense_sample = ours[picks[0]].x.numpy()
    in_process = {
        "store, packed": median_ms(lambda i: packed[picks[i]]),
        "store, dense": median_ms(lambda i: ours[picks[i]]),
        "store format 1": median_ms(lambda i: old[picks[i]]),
        "SwiFT v1": median_ms(lambda i: theirs[picks[i]]),
        "memcpy, packed bytes": median_ms(lambda i: sample.copy()),
        "memcpy, dense bytes": median_ms(lambda i: dense_sample.copy()),
    }
    for ds in (ours, packed, old):
        ds.store.close()  # no mapping or handle left in this process: cold reads are cold

    bytes_store = sum(p.stat().st_size for p in files_under(store_dir))
    bytes_old = sum(p.stat().st_size for p in files_under(old_dir))
    bytes_v1 = sum(p.stat().st_size for p in files_under(v1_dir))
    raw = num_subjects * num_frames * int(np.prod(grid)) * 2
    print(f"write time: store {t_store:.1f} s, v1 {t_v1:.1f} s")

    def train(path, packed_windows):
        return WindowDataset(open_store(path), mode="train", packed=packed_windows, **kw)

    def scatter(b):
        return unpack_batch(b, torch.float16)

    layouts = (  # name, dataset, files, collate, main-process step
        ("store, packed", train(store_dir, True), store_dir, collate_samples, None),
        (
            "store, packed + CPU scatter",
            train(store_dir, True),
            store_dir,
            collate_samples,
            scatter,
        ),
        ("store, dense", train(store_dir, False), store_dir, collate_samples, None),
        ("store format 1", train(old_dir, False), old_dir, collate_samples, None),
        ("SwiFT v1", theirs, v1_dir, None, None),
    )
    results = {(c, name): [] for c in ("warm", "cold") for name, *_ in layouts}
    for _ in range(args.repeats):  # interleaved, so background load hits every layout alike
        for cache in ("warm", "cold"):
            for name, ds, root, collate, post in layouts:
                files = files_under(root)
                if cache == "cold":
                    evict(files)
                else:  # warm the page cache with one untimed pass
                    for p in files:
                        p.read_bytes()
                results[(cache, name)].append(
                    windows_per_second(ds, args.workers, seed=0, collate=collate, post=post)[0]
                )
    med = {k: float(np.median(v)) for k, v in results.items()}

    print()
    print(
        f"windows per epoch: {len(theirs)} ({L} frames, stride_between_seq {args.stride}), "
        f"{args.workers} workers, batch 1, shuffled, fp16 windows; median of {args.repeats} "
        f"epochs; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'windows/s':<30} {'warm':>8} {'× v1':>6} {'cold':>8} {'× v1':>6}")
    for name, *_ in layouts:
        w, c = med[("warm", name)], med[("cold", name)]
        vw, vc = med[("warm", "SwiFT v1")], med[("cold", "SwiFT v1")]
        print(f"{name:<30} {w:8.1f} {w / vw:5.2f}× {c:8.1f} {c / vc:5.2f}×")
    print(
        f"bytes: store {bytes_store / 1e6:.1f} MB ({bytes_store / bytes_v1:.3f} of v1) | store "
        f"format 1 {bytes_old / 1e6:.1f} MB ({bytes_old / bytes_v1:.3f}) | SwiFT v1 "
        f"{bytes_v1 / 1e6:.1f} MB | raw fp16 {raw / 1e6:.1f} MB"
    )
    print(
        "in-process, ms per window (median of 10): "
        + ", ".join(f"{k} {v:.2f}" for k, v in in_process.items())
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
