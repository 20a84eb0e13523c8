"""Model step benchmarks on CPU: time, peak memory, FLOPs and efficiency vs sgemm.

Each configuration runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own.
For every configuration, at ``--threads`` threads, fp32, batch 1:

* forward (``torch.no_grad``) and forward+backward seconds: median of ``--repeats`` runs
  after ``--warmup`` runs (the minimum is printed too: on a shared machine it is the
  better estimate of the uncontended time; the 1-minute load average is recorded);
* peak RSS of the process (MB) and its RSS before the first step (model + runtime);
* model FLOPs of one forward and one forward+backward (``torch.utils.flop_counter`` on the
  ``meta`` device, explicit attention math);
* achieved GFLOP/s of the fwd+bwd step and its ratio to the fp32 sgemm throughput measured
  in the same run (a 2048³ matmul at the same thread count).

Usage::

    python benchmarks/bench_model.py                  # the full set (several minutes)
    python benchmarks/bench_model.py --quick          # small grids only (seconds)
    python benchmarks/bench_model.py --only v1_paper_96  --repeats 7
    python benchmarks/bench_model.py --json benchmarks/_work/models.json

Results are recorded by hand in ``benchmarks/RESULTS.md`` (``## Models``) with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (preset, overrides, input (D, H, W, T), attention path)
CONFIGS: dict[str, tuple[str, dict, tuple[int, int, int, int], str]] = {
    "v1_paper_96": ("swift_v1_paper", {}, (96, 96, 96, 20), "sdpa"),
    "v1_paper_96_explicit": ("swift_v1_paper", {}, (96, 96, 96, 20), "explicit"),
    "v1_small_48": ("swift_v1_paper", {"img_size": (48, 48, 48, 20)}, (48, 48, 48, 20), "sdpa"),
    "v1_T10": ("swift_v1_paper", {"img_size": (96, 96, 96, 40)}, (96, 96, 96, 10), "sdpa"),
    "v1_T20": ("swift_v1_paper", {"img_size": (96, 96, 96, 40)}, (96, 96, 96, 20), "sdpa"),
    "v1_T40": ("swift_v1_paper", {"img_size": (96, 96, 96, 40)}, (96, 96, 96, 40), "sdpa"),
    "v2_5m_96": ("swift_v2_5m", {"drop_path_rate": 0.0}, (96, 96, 96, 20), "sdpa"),
    "v2_51m_96": ("swift_v2_51m", {"drop_path_rate": 0.0}, (96, 96, 96, 20), "sdpa"),
    "v2f_51m_96": ("swift_v2_factorized_51m", {"drop_path_rate": 0.0}, (96, 96, 96, 20), "sdpa"),
}
QUICK = ["v1_small_48"]
DEFAULT = [
    "v1_paper_96",
    "v1_paper_96_explicit",
    "v1_small_48",
    "v1_T10",
    "v1_T20",
    "v1_T40",
    "v2_5m_96",
    "v2_51m_96",
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _median_time(fn, warmup: int, repeats: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def sgemm_gflops(threads: int, n: int = 2048, repeats: int = 7) -> float:
    """fp32 matmul throughput (GFLOP/s) at ``threads`` threads, median of ``repeats``."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    t, _ = _median_time(lambda: a @ b, 2, repeats)
    return 2 * n**3 / t / 1e9


def model_flops(preset: str, overrides: dict, grid: tuple[int, ...]) -> tuple[int, int]:
    """FLOPs of one forward and one forward+backward at batch 1.

    Counted on the ``meta`` device with the explicit attention path, so attention matmuls are
    counted once, at the true head_dim (the fused CPU kernel has no FLOP formula, and the
    fused path zero-pads head_dim)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from swiftlib.models import create_model

    with torch.device("meta"):
        model = create_model(preset, **overrides)
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        x = torch.empty(1, 1, *grid)
        with FlopCounterMode(display=False) as fc:
            with torch.no_grad():
                model.forward_features(x)
        fwd = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model.forward_features(x).float().pow(2).mean().backward()
        step = fc.get_total_flops()
    return fwd, step


def worker(name: str, threads: int, warmup: int, repeats: int) -> dict:
    """Measure one configuration in this process (called in a fresh subprocess)."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO))
    from swiftlib.models import create_model

    preset, overrides, (D, H, W, T), path = CONFIGS[name]
    torch.manual_seed(0)
    model = create_model(preset, **overrides)
    if path == "explicit":
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    x = torch.randn(1, 1, D, H, W, T)
    rss_model = _rss_mb()

    def fwd():
        with torch.no_grad():
            model.forward_features(x)

    def step():
        model.zero_grad(set_to_none=True)
        model.forward_features(x).float().pow(2).mean().backward()

    model.eval()
    t_fwd, fwd_times = _median_time(fwd, warmup, repeats)
    model.train()
    t_step, step_times = _median_time(step, warmup, repeats)
    rss_peak = _rss_mb()
    flops_fwd, flops_step = model_flops(preset, overrides, (D, H, W, T))
    return {
        "name": name,
        "preset": preset,
        "overrides": overrides,
        "input": [1, 1, D, H, W, T],
        "attention": path,
        "params": sum(p.numel() for p in model.parameters()),
        "fwd_s": t_fwd,
        "fwd_times": fwd_times,
        "step_s": t_step,
        "step_times": step_times,
        "rss_model_mb": rss_model,
        "rss_peak_mb": rss_peak,
        "gflop_fwd": flops_fwd / 1e9,
        "gflop_step": flops_step / 1e9,
        "gflops_step": flops_step / t_step / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small grid only")
    ap.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="configurations to run")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats < 5 and args.worker is None:
        print("note: --repeats < 5; the recorded figures use ≥ 5", file=sys.stderr)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.warmup, args.repeats)))
        return 0

    names = args.only or (QUICK if args.quick else DEFAULT)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    gemm_before = sgemm_gflops(args.threads)
    results = []
    for name in names:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--threads",
            str(args.threads),
            "--warmup",
            str(args.warmup),
            "--repeats",
            str(args.repeats),
        ]
        load = os.getloadavg()[0]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(f"{name}: FAILED\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["loadavg_1m_before"] = load
        results.append(res)
        print(
            f"{name}: step {res['step_s']:.3f} s, fwd {res['fwd_s']:.3f} s, "
            f"peak RSS {res['rss_peak_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
    gemm_after = sgemm_gflops(args.threads)
    gemm = max(gemm_before, gemm_after)

    import torch

    print(
        f"\nsgemm fp32 2048³ at {args.threads} threads: {gemm_before:.1f} / {gemm_after:.1f} "
        f"GFLOP/s (before / after; ratios use {gemm:.1f})"
    )
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"median of {args.repeats} after {args.warmup} warm-up, batch 1, fp32\n"
    )
    print(
        "| config | preset | input D×H×W×T | attention | params | fwd s | fwd+bwd s (min) | "
        "GFLOP fwd+bwd | GFLOP/s | / sgemm | peak RSS MB (model) | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        grid = "×".join(str(s) for s in r["input"][2:])
        print(
            f"| {r['name']} | {r['preset']} | {grid} | {r['attention']} | {r['params']:,} | "
            f"{r['fwd_s']:.3f} | {r['step_s']:.3f} ({min(r['step_times']):.3f}) | "
            f"{r['gflop_step']:.1f} | {r['gflops_step']:.1f} | {r['gflops_step'] / gemm:.0%} | "
            f"{r['rss_peak_mb']:.0f} ({r['rss_model_mb']:.0f}) | {r['loadavg_1m_before']:.1f} |"
        )
    t_scaling = [r for r in results if r["name"] in ("v1_T10", "v1_T20", "v1_T40")]
    if len(t_scaling) >= 2:
        base = t_scaling[0]
        print(
            "\nT scaling (fwd+bwd, relative to the first): "
            + ", ".join(
                f"T={r['input'][5]}: {r['step_s'] / base['step_s']:.2f}× time for "
                f"{r['input'][5] / base['input'][5]:.0f}× frames"
                for r in t_scaling
            )
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "sgemm_gflops": [gemm_before, gemm_after],
                    "threads": args.threads,
                    "results": results,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
