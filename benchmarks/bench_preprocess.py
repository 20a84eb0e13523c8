"""Preprocessing benchmark: NIfTI → store against the cost of just reading the NIfTI.

A UKB-shaped scan (MNI152NLin6Asym 2 mm, 91×109×91, 490 frames at TR 0.735 s, int16 in
FSL's LAS voxel order, gzip NIfTI as the UK Biobank ships ``filtered_func_data_clean``) is
made on the fly. Timed in one run, alternating, median of ``--repeats``:

* **floor**: what any tool must do — open the ``.nii.gz``, gunzip and decode every voxel
  (nibabel ``dataobj`` → ``int16`` array) and write the same bytes to a file in the output
  folder;
* **preprocess**: ``swiftlib.data.preprocess.preprocess`` of that one file into a fresh store
  with the defaults (2 mm, 96³, global z-score, checksummed HDF5).

Reported: seconds for each, the throughput ratio floor / preprocess (goal ≥ 0.8: preprocessing
is bound by the same I/O as reading the file) and the store's bytes against the NIfTI's.

    python benchmarks/bench_preprocess.py              # 490 frames (≈ 0.9 GB of int16)
    python benchmarks/bench_preprocess.py --quick      # 60 frames, seconds
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UKB_SHAPE = (91, 109, 91)
UKB_TR = 0.735
# FSL's MNI152 2 mm grid: voxel (0, 0, 0) at (90, -126, -72) mm, x running right → left (LAS).
UKB_AFFINE = np.array([[-2.0, 0, 0, 90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1.0]])


def make_scan(path: Path, frames: int, seed: int = 0) -> None:
    """A brain-shaped int16 4D image: MNI brain mask × (10 000 + smooth signal + noise)."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    mask_img = resample_img(
        load_mni152_brain_mask(resolution=2),
        target_affine=UKB_AFFINE,
        target_shape=UKB_SHAPE,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    mask = np.asarray(mask_img.dataobj) > 0
    rng = np.random.default_rng(seed)
    inside = int(mask.sum())
    t = np.arange(frames) * UKB_TR
    drift = (200 * np.sin(2 * np.pi * 0.03 * t)).astype(np.float32)
    data = np.zeros(UKB_SHAPE + (frames,), dtype=np.int16)
    base = 10_000 + rng.normal(0, 800, inside).astype(np.float32)
    for start in range(0, frames, 64):  # bounded memory: 64 frames at a time
        stop = min(frames, start + 64)
        block = base[:, None] + drift[None, start:stop]
        block += rng.normal(0, 150, (inside, stop - start)).astype(np.float32)
        data[mask, start:stop] = np.clip(block, 0, 32767).astype(np.int16)
    img = nib.Nifti1Image(data, UKB_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = UKB_TR
    img.header.set_qform(UKB_AFFINE, code=4)  # MNI152
    img.header.set_sform(UKB_AFFINE, code=4)
    nib.save(img, path)


def floor_once(src: Path, out_dir: Path) -> float:
    """Read + gunzip + decode the whole image, write the same bytes: the I/O floor."""
    import nibabel as nib

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    arr = np.asarray(nib.load(src).dataobj)
    with open(out_dir / "copy.raw", "wb") as f:
        f.write(arr.tobytes())
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def preprocess_once(src: Path, out_dir: Path) -> tuple[float, int]:
    from swiftlib.data.preprocess import PreprocessConfig, preprocess

    t0 = time.perf_counter()
    report = preprocess(src, out_dir, config=PreprocessConfig(), progress=False)
    seconds = time.perf_counter() - t0
    if not report.ok or len(report.written) != 1:
        raise SystemExit(f"preprocess failed: {report.to_dict()}")
    size = sum(p.stat().st_size for p in out_dir.rglob("*.h5"))
    return seconds, size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=490, help="frames of the scan (UKB: 490)")
    ap.add_argument("--quick", action="store_true", help="60 frames")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="folder for the scan and outputs (tmp)")
    args = ap.parse_args(argv)
    frames = 60 if args.quick else args.frames
    if frames < 20:
        ap.error(f"--frames {frames}: expected at least 20 (one window)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_preprocess_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "sub-01_task-rest_space-MNI152NLin6Asym_res-2_desc-preproc_bold.nii.gz"
        t0 = time.perf_counter()
        make_scan(src, frames)
        print(
            f"made {src.name}: {UKB_SHAPE + (frames,)} int16, "
            f"{src.stat().st_size / 1e6:.0f} MB gzip in {time.perf_counter() - t0:.0f} s"
        )
        floors, preps, store_bytes = [], [], 0
        for r in range(args.repeats):  # alternate, so drift in machine load hits both
            floors.append(floor_once(src, work / f"floor_{r}"))
            shutil.rmtree(work / f"floor_{r}")
            seconds, store_bytes = preprocess_once(src, work / f"store_{r}")
            preps.append(seconds)
            shutil.rmtree(work / f"store_{r}")
        floor_s, prep_s = statistics.median(floors), statistics.median(preps)
        load = os.getloadavg()[0]
        print(f"load average (1 min) at the end: {load:.2f}")
        print(f"| | seconds (median of {args.repeats}) |")
        print("|---|---|")
        print(f"| floor: read + gunzip + write the same bytes | {floor_s:.1f} |")
        print(f"| swiftlib preprocess → store (defaults) | {prep_s:.1f} |")
        ratio = floor_s / prep_s
        verdict = "met" if ratio >= 0.8 else "NOT met"
        print(f"throughput ratio floor/preprocess: {ratio:.2f} (goal ≥ 0.8: {verdict})")
        print(f"store bytes / NIfTI bytes: {store_bytes / src.stat().st_size:.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
