"""A small µTransfer demonstration on the synthetic cohort: sweep the learning rate for SimMIM
pretraining at a base width and at 4× the width, under the standard parametrisation (SP) and
under µP (``model_overrides: {mup: true}`` + ``optim.mup: true``), and compare the best
learning rates. µP's promise (Yang et al. 2022): the best LR at the base width stays best at
the wider model; under SP it moves (down, for Adam).

Each run is the pretraining task's own step (``SimMIMTask._step``: masks, brain-only loss)
and optimiser (``configure_optimizers``: AdamW groups, warm-up + cosine), on windows held in
memory, scored on held-out subjects' windows with fixed masks. Kept small for a shared CPU:

    python benchmarks/mup_transfer.py --json benchmarks/_work/mup_transfer.json
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("mup_transfer")

COHORT = dict(num_subjects=12, seed=5, voxel_size=8.0, grid=(24, 24, 24), num_frames=24, tr=1.0)
MODEL = dict(
    img_size=(24, 24, 24, 8),
    depths=(2, 2),
    num_heads=(2, 4),
    window_size=(3, 3, 3, 2),
    patch_size=(4, 4, 4, 2),
    drop_path_rate=0.0,
)


def load_windows(work_dir: Path, sequence_length: int = 8):
    """(train windows, validation windows) as float tensors ``(N, 1, D, H, W, T)``; the last 2
    subjects are held out."""
    from swiftlib.data import WindowDataset, open_store
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = work_dir / "mup_transfer_store"
    if (root / "manifest.json").exists():
        store = open_store(root)
    else:
        store = make_synthetic_cohort(root, config=SyntheticConfig(**COHORT), progress=False)
    ids = list(store.subject_ids)

    def stack(subjects):
        ds = WindowDataset(store, subjects, sequence_length=sequence_length, mode="eval")
        return torch.stack([ds[i].x for i in range(len(ds))])

    return stack(ids[:-2]), stack(ids[-2:])


def run(width, mup, lr, train, val, steps, batch_size, base_width, seed=0) -> dict:
    from swiftlib.tasks import SimMIMTask
    from swiftlib.tasks.pretrain import PretrainConfig

    torch.manual_seed(seed)
    overrides = {**MODEL, "embed_dim": width}
    if mup:
        overrides.update(mup=True, mup_base_width=base_width)
    cfg = PretrainConfig(
        model="swift_v2_test",
        model_overrides=overrides,
        mask_patch=(1, 1, 1, 1),
        optim={"lr": lr, "weight_decay": 0.0, "total_steps": steps, "mup": mup},
        seed=seed,
    )
    task = SimMIMTask(cfg)
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    gen = torch.Generator().manual_seed(seed)
    task.train()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(train), (batch_size,), generator=gen)
        out, _ = task._step(train[idx], step)
        if not torch.isfinite(out.loss):
            return {"train_loss": math.inf, "val_loss": math.inf, "diverged_at": step}
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
    task.eval()
    with torch.no_grad():
        val_loss = float(
            np.mean([float(task._step(val[i : i + 1], 10**9 + i)[0].loss) for i in range(len(val))])
        )
    return {
        "train_loss": float(np.mean(losses[-10:])),
        "val_loss": val_loss if math.isfinite(val_loss) else math.inf,
    }


def best_lr(rows: list[dict]) -> float:
    return min(rows, key=lambda r: r["val_loss"])["lr"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-width", type=int, default=16)
    ap.add_argument("--width-mult", type=int, default=4)
    ap.add_argument("--lrs", type=float, nargs="+", default=[2.0**k for k in range(-11, -3)])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--work-dir", default="benchmarks/_work")
    ap.add_argument("--json", help="write every run and the best learning rates here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("swiftlib").setLevel(logging.WARNING)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    lrs = sorted(args.lrs)
    if len(lrs) < 3:
        raise SystemExit(f"--lrs {lrs}: need ≥ 3 learning rates for a sweep")
    ratios = {round(b / a, 6) for a, b in zip(lrs, lrs[1:])}
    if len(ratios) != 1:
        raise SystemExit(f"--lrs {lrs}: expected a geometric grid (one ratio between neighbours)")
    train, val = load_windows(Path(args.work_dir))
    log.info(
        "windows: %d train, %d validation, shape %s", len(train), len(val), tuple(train.shape[1:])
    )
    widths = (args.base_width, args.base_width * args.width_mult)
    rows = []
    t0 = time.time()
    for label, mup in (("sp", False), ("mup", True)):
        for width in widths:
            for lr in lrs:
                r = run(width, mup, lr, train, val, args.steps, args.batch_size, args.base_width)
                rows.append({"param": label, "width": width, "lr": lr, **r})
                log.info(
                    "%-3s width %3d lr %.2e: val %.4f train %.4f",
                    label,
                    width,
                    lr,
                    r["val_loss"],
                    r["train_loss"],
                )
    summary = {}
    for label in ("sp", "mup"):
        best = [
            best_lr([r for r in rows if r["param"] == label and r["width"] == w]) for w in widths
        ]
        shift = round(math.log(best[1] / best[0]) / math.log(lrs[1] / lrs[0]))
        summary[label] = {"best_lr": dict(zip(map(str, widths), best)), "shift_grid_steps": shift}
        log.info(
            "%s: best lr %.2e at width %d, %.2e at width %d (%+d grid steps)",
            label,
            best[0],
            widths[0],
            best[1],
            widths[1],
            shift,
        )
    load = os.getloadavg()
    result = {
        "widths": widths,
        "lrs": lrs,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "runs": rows,
        "summary": summary,
        "elapsed_s": round(time.time() - t0, 1),
        "loadavg": [round(v, 2) for v in load],
    }
    if args.json:
        from swiftlib.utils.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
