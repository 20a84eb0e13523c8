"""One prepared GPU check for the SwiFT v2 encoders (≤ 8 minutes on one H200).

Needs only torch (+ numpy) and this repository. For each preset (default ``swift_v2_51m``
and ``swift_v2_202m``) at 96³×20, batch-first:

1. **agreement**: the same weights and input on CPU (fp32) and GPU (fp32 with TF32 off, and
   bf16 autocast): max abs / relative error of ``forward_features``;
2. **largest batch that fits** one bf16-autocast training step (forward + backward + fused
   AdamW step), found by doubling then bisecting, with OOMs caught;
3. **throughput and MFU** at that batch (and at half of it): median step time over
   ``--repeats`` CUDA-event-timed steps after warm-up; samples/s; model FLOPs per step from
   ``torch.utils.flop_counter`` (counted once at batch 1 on the ``meta`` device, × batch);
   MFU = achieved FLOP/s ÷ the device's dense bf16 peak (H200/H100 SXM: 989 TFLOP/s).

Attention runs through ``F.scaled_dot_product_attention``; during timing only the flash,
memory-efficient and cuDNN backends are allowed (no silent fallback to the math kernel —
if that fails the check reruns with all backends and says so).

Usage::

    python benchmarks/gpu_check.py                        # the device check
    python benchmarks/gpu_check.py --dry-run              # tiny presets on CPU (seconds)
    python benchmarks/gpu_check.py --compile              # also try torch.compile

Writes ``$OUT/gpu_check.json`` when ``$OUT`` is set (else ``benchmarks/_work/``) and prints a
Markdown summary for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swiftlib.models import create_model, get_model_config  # noqa: E402

#: Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in PEAK_BF16_TFLOPS.items():
        if key in name:
            return val
    return None


def count_flops(preset: str, grid: tuple[int, ...], overrides: dict) -> float:
    """Model FLOPs of one training step (fwd + bwd) at batch 1, counted on ``meta``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model(preset, **overrides)
        for m in model.modules():  # explicit math: attention counted at the true head_dim
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        x = torch.empty(1, 1, *grid)
        with FlopCounterMode(display=False) as fc:
            model.forward_features(x).float().pow(2).mean().backward()
    return float(fc.get_total_flops())


def sdpa_fast_only():
    """Context allowing only fused SDPA kernels (flash / memory-efficient / cuDNN)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        if hasattr(SDPBackend, "CUDNN_ATTENTION"):
            backends.append(SDPBackend.CUDNN_ATTENTION)
        return sdpa_kernel(backends)
    except Exception:  # older torch: no restriction
        return contextlib.nullcontext()


def agreement(preset: str, grid: tuple[int, ...], overrides: dict, device: torch.device,
              batch: int = 1) -> dict:
    """CPU fp32 vs device fp32 (TF32 off) and bf16 autocast outputs for the same weights."""
    torch.manual_seed(0)
    model = create_model(preset, **overrides).eval()
    x = torch.randn(batch, 1, *grid)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = model.forward_features(x)
    cpu_s = time.perf_counter() - t0
    model = model.to(device)
    xd = x.to(device)
    out = {"cpu_fp32_s": cpu_s}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            y32 = model.forward_features(xd).float().cpu()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                y16 = model.forward_features(xd).float().cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    scale = ref.abs().max().item()
    for tag, y in (("fp32", y32), ("bf16", y16)):
        err = (y - ref).abs().max().item()
        out[f"{tag}_max_abs_err"] = err
        out[f"{tag}_max_rel_err"] = err / max(scale, 1e-12)
        out[f"{tag}_cosine"] = torch.nn.functional.cosine_similarity(
            y.flatten(), ref.flatten(), dim=0).item()
    out["fp32_ok"] = out["fp32_max_rel_err"] < 1e-3
    out["bf16_ok"] = out["bf16_cosine"] > 0.99
    return out


class Trainer:
    """One bf16-autocast training step of ``model`` on random data."""

    def __init__(self, preset: str, overrides: dict, grid: tuple[int, ...], device: torch.device,
                 compile_model: bool = False, checkpointing: bool = False) -> None:
        torch.manual_seed(0)
        self.model = create_model(preset, **overrides).to(device).train()
        if checkpointing:
            self.model.set_grad_checkpointing(True)
        self.fwd = torch.compile(self.model.forward_features) if compile_model else \
            self.model.forward_features
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=fused)
        self.grid, self.device = grid, device

    def batch(self, n: int) -> torch.Tensor:
        return torch.randn(n, 1, *self.grid, device=self.device)

    def step(self, x: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.fwd(x)
        out.float().pow(2).mean().backward()
        self.opt.step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def largest_batch(tr: Trainer, max_batch: int, deadline: float) -> tuple[int, list]:
    """Doubling then bisection on one training step; returns the largest batch that ran."""
    tried = []

    def fits(n: int) -> bool:
        x = None
        try:
            x = tr.batch(n)
            tr.step(x)
            tr.sync()
            ok = True
        except RuntimeError as err:
            if not is_oom(err):
                raise
            ok = False
        del x
        tr.opt.zero_grad(set_to_none=True)
        free(tr.device)
        tried.append((n, ok))
        log(f"  batch {n}: {'fits' if ok else 'OOM'}")
        return ok

    lo, hi = 0, None
    n = 1
    while n <= max_batch and time.time() < deadline:
        if fits(n):
            lo = n
            n *= 2
        else:
            hi = n
            break
    if hi is None:
        return lo, tried
    while hi - lo > 1 and time.time() < deadline:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried


def time_steps(tr: Trainer, batch: int, warmup: int, repeats: int) -> list[float]:
    x = tr.batch(batch)
    for _ in range(warmup):
        tr.step(x)
    tr.sync()
    times = []
    for _ in range(repeats):
        if tr.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            tr.step(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            tr.step(x)
            times.append(time.perf_counter() - t0)
    return times


def check_preset(preset: str, args, device: torch.device, deadline: float) -> dict:
    overrides = {"drop_path_rate": 0.0}
    grid = tuple(args.grid) if args.grid else tuple(get_model_config(preset).img_size)
    res: dict = {"preset": preset, "grid": list(grid)}
    log(f"{preset}: counting FLOPs on meta")
    flops1 = count_flops(preset, grid, overrides)
    res["gflop_per_sample_step"] = flops1 / 1e9
    if not args.skip_agreement:
        log(f"{preset}: CPU vs {device.type} agreement")
        try:
            res["agreement"] = agreement(preset, grid, overrides, device)
        except Exception as err:  # keep going: throughput is still useful
            res["agreement"] = {"error": repr(err)}
        free(device)
    peak = peak_tflops(device, args.peak_tflops)
    for compiled in ([False, True] if args.compile else [False]):
        tag = "compiled" if compiled else "eager"
        entry: dict = {}
        res[tag] = entry
        try:
            ctx = sdpa_fast_only() if device.type == "cuda" else contextlib.nullcontext()
            try:
                with ctx:
                    entry.update(_throughput(preset, overrides, grid, device, compiled, args,
                                             deadline, flops1, peak))
                entry["sdpa_backends"] = "fused only" if device.type == "cuda" else "cpu"
            except RuntimeError as err:
                if is_oom(err) or device.type != "cuda":
                    raise
                log(f"{preset} {tag}: fused-only SDPA failed ({err}); retrying with all backends")
                free(device)
                entry.update(_throughput(preset, overrides, grid, device, compiled, args,
                                         deadline, flops1, peak))
                entry["sdpa_backends"] = f"all (fused-only failed: {str(err)[:200]})"
        except Exception as err:
            entry["error"] = repr(err)
            log(traceback.format_exc())
        free(device)
    return res


def _throughput(preset, overrides, grid, device, compiled, args, deadline, flops1, peak) -> dict:
    tr = Trainer(preset, overrides, grid, device, compile_model=compiled,
                 checkpointing=args.grad_checkpointing)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log(f"{preset}: searching the largest batch (≤ {args.max_batch})")
    best, tried = largest_batch(tr, args.max_batch, deadline)
    out: dict = {"largest_batch": best, "batch_trials": tried}
    if best == 0:
        return out
    for batch in sorted({best, max(1, best // 2)}, reverse=True):
        if time.time() > deadline:
            out.setdefault("skipped", []).append(batch)
            continue
        times = time_steps(tr, batch, args.warmup, args.repeats)
        t = statistics.median(times)
        flops = flops1 * batch
        row = {"step_s": t, "step_times": times, "samples_per_s": batch / t,
               "tflops": flops / t / 1e12}
        if peak:
            row["mfu"] = flops / t / (peak * 1e12)
        if device.type == "cuda":
            row["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        out[f"batch_{batch}"] = row
        log(f"{preset}: batch {batch}: {t * 1000:.0f} ms/step, {batch / t:.2f} samples/s, "
            f"{row['tflops']:.1f} TFLOP/s" + (f", MFU {row['mfu']:.1%}" if peak else ""))
    del tr
    return out


def summary(report: dict) -> str:
    lines = [f"GPU check: {report['device']} (torch {report['torch']}), bf16 autocast, "
             f"fused AdamW, grid {report['grid_label']}, {report['wall_s']:.0f} s wall",
             "",
             "| preset | mode | batch | ms/step | samples/s | TFLOP/s | MFU | max mem GB | "
             "CPU-vs-GPU fp32 rel err | bf16 cosine |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        agr = r.get("agreement", {})
        fp32 = f"{agr['fp32_max_rel_err']:.1e}" if "fp32_max_rel_err" in agr else "—"
        cos = f"{agr['bf16_cosine']:.5f}" if "bf16_cosine" in agr else "—"
        for mode in ("eager", "compiled"):
            entry = r.get(mode)
            if not entry:
                continue
            if "error" in entry:
                lines.append(f"| {r['preset']} | {mode} | — | error: {entry['error'][:80]} | | | | | {fp32} | {cos} |")
                continue
            for key, row in entry.items():
                if not key.startswith("batch_") or key == "batch_trials":
                    continue
                mfu = f"{row['mfu']:.1%}" if "mfu" in row else "—"
                mem = f"{row['max_memory_gb']:.1f}" if "max_memory_gb" in row else "—"
                lines.append(f"| {r['preset']} | {mode} | {key[6:]} | {row['step_s'] * 1000:.0f} | "
                             f"{row['samples_per_s']:.2f} | {row['tflops']:.1f} | {mfu} | {mem} | "
                             f"{fp32} | {cos} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--grid", nargs=4, type=int, default=None, metavar=("D", "H", "W", "T"))
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny presets on CPU (or the given device) to test this script")
    ap.add_argument("--device", default=None)
    ap.add_argument("--max-batch", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="stop starting new measurements after this many seconds")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    t_start = time.time()
    if args.dry_run:
        args.presets = args.presets or ["swift_v2_test", "swift_v2_factorized_test"]
        args.max_batch = args.max_batch or 4
        args.warmup, args.repeats = min(args.warmup, 1), min(args.repeats, 2)
        device = torch.device(args.device or "cpu")
    else:
        args.presets = args.presets or ["swift_v2_51m", "swift_v2_202m"]
        args.grid = args.grid or [96, 96, 96, 20]
        args.max_batch = args.max_batch or 256
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type != "cuda":
            log("no CUDA device: use --dry-run for a CPU test of this script")
            return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    deadline = t_start + args.budget_s
    if not args.dry_run:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    log(f"device {name}, torch {torch.__version__}, presets {args.presets}")

    results = []
    for preset in args.presets:
        if time.time() > deadline:
            results.append({"preset": preset, "skipped": "time budget"})
            continue
        results.append(check_preset(preset, args, device, deadline))
    report = {
        "device": name, "torch": torch.__version__, "dry_run": args.dry_run,
        "grid_label": "×".join(map(str, args.grid)) if args.grid else "preset img_size",
        "peak_bf16_tflops": peak_tflops(device, args.peak_tflops),
        "wall_s": time.time() - t_start, "results": results,
    }
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "benchmarks" / "_work"
    path = args.json or out_dir / "gpu_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    print(summary(report))
    log(f"wrote {path} ({report['wall_s']:.0f} s)")
    ok = all("error" not in r.get("eager", {}) for r in results if "skipped" not in r)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
