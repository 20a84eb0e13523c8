"""One prepared GPU check for the SwiFT v2 encoders (about 2–4 minutes on one H200).

Needs only torch (+ numpy) and this repository. For each preset (default ``swift_v2_51m``
and ``swift_v2_202m``) at 96³×20, batch-first:

1. **agreement**: the same weights and input on CPU (fp32) and GPU (fp32 with TF32 off, and
   bf16 autocast): max abs / relative error and cosine of ``forward_features``. LayerScale is
   set to ``AGREEMENT_LAYER_SCALE`` for this check only: at the presets' 1e-5 every block's
   attention and MLP barely move the output, and a broken kernel would pass. Pass rule:
   fp32 max |Δ| / max |ref| ≤ ``FP32_MAX_REL_ERR``, bf16 cosine ≥ ``BF16_MIN_COSINE``;
2. **largest batch that fits** one bf16-autocast training step (forward + backward + fused
   AdamW step), found by doubling then bisecting (to within 1/16), with OOMs caught;
3. **throughput and MFU** at that batch (and at half of it): median step time over
   ``--repeats`` CUDA-event-timed steps after warm-up; samples/s; model FLOPs per step from
   ``torch.utils.flop_counter`` (counted once at batch 1 on the ``meta`` device with the
   explicit attention math at the true head_dim, × batch; no recomputation counted);
   MFU = achieved FLOP/s ÷ the device's dense bf16 datasheet peak (H200/H100 SXM:
   989 TFLOP/s). The same FLOP/s is also given as a fraction of a bf16 8192³ matmul
   measured on the device, the practical ceiling.

Attention runs through ``F.scaled_dot_product_attention``; during timing only the flash,
memory-efficient and cuDNN backends are allowed (no silent fallback to the math kernel —
if that fails the check reruns with all backends and says so).

``--compile`` adds a ``torch.compile`` measurement (``--compile-only``: just that one; with
``--batch N`` it is timed at N, else at half the largest eager batch, with no search, since
every new batch size recompiles).

Exit status: 0 when every check passed; 1 when an agreement check failed or errored, a
measurement errored, or a preset was skipped for the time budget; 2 without a CUDA device
(outside ``--dry-run``).

Usage::

    python benchmarks/gpu_check.py                        # the device check
    python benchmarks/gpu_check.py --dry-run              # tiny presets on CPU (seconds)
    python benchmarks/gpu_check.py --presets swift_v2_202m --compile-only --batch 16

Writes ``$OUT/gpu_check.json`` when ``$OUT`` is set (else ``benchmarks/_work/``), rewritten
after every preset so a run stopped early keeps what it measured, and prints a Markdown
summary for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
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

#: Dense bf16 tensor-core peaks (TFLOP/s, vendor datasheets), first matching name fragment wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
)

#: Agreement pass rules (module constants so tests can tighten them).
FP32_MAX_REL_ERR = 1e-3  # CPU fp32 vs GPU fp32 (TF32 off): max |Δ| / max |ref|
BF16_MIN_COSINE = 0.99  # CPU fp32 vs GPU bf16 autocast: cosine of the flattened outputs
AGREEMENT_LAYER_SCALE = 1.0  # LayerScale init for the agreement model (presets: 1e-5)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in PEAK_BF16_TFLOPS:
        if key in name:
            return val
    return None


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float | None:
    """bf16 ``n³`` matmul rate on random data (mean of ``repeats`` after 3 warm-ups)."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1000.0 / repeats
    del a, b
    free(device)
    return 2 * n**3 / seconds / 1e12


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


@contextlib.contextmanager
def fp32_matmul(precision: str):
    """``torch.set_float32_matmul_precision`` for a block ("highest" = no TF32). Only this API
    is used here: mixing it with the legacy ``allow_tf32`` flags makes torch ≥ 2.9 raise."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def agreement_overrides(preset: str) -> dict:
    """LayerScale raised for the agreement model (presets without LayerScale: none)."""
    return (
        {"layer_scale_init": AGREEMENT_LAYER_SCALE}
        if hasattr(get_model_config(preset), "layer_scale_init")
        else {}
    )


def agreement(
    preset: str, grid: tuple[int, ...], overrides: dict, device: torch.device, batch: int = 1
) -> dict:
    """CPU fp32 vs device fp32 (TF32 off) and bf16 autocast outputs for the same weights."""
    overrides = {**overrides, **agreement_overrides(preset)}
    torch.manual_seed(0)
    model = create_model(preset, **overrides).eval()
    x = torch.randn(batch, 1, *grid)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = model.forward_features(x)
    cpu_s = time.perf_counter() - t0
    model = model.to(device)
    xd = x.to(device)
    out: dict = {
        "cpu_fp32_s": cpu_s,
        "overrides": overrides,
        "tolerances": {"fp32_max_rel_err": FP32_MAX_REL_ERR, "bf16_min_cosine": BF16_MIN_COSINE},
    }
    with fp32_matmul("highest"), torch.no_grad():
        y32 = model.forward_features(xd).float().cpu()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            y16 = model.forward_features(xd).float().cpu()
    scale = ref.abs().max().item()
    for tag, y in (("fp32", y32), ("bf16", y16)):
        err = (y - ref).abs().max().item()
        out[f"{tag}_max_abs_err"] = err
        out[f"{tag}_max_rel_err"] = err / max(scale, 1e-12)
        out[f"{tag}_cosine"] = torch.nn.functional.cosine_similarity(
            y.flatten().double(), ref.flatten().double(), dim=0
        ).item()
    # comparisons with NaN are False: a non-finite output fails
    out["fp32_ok"] = bool(out["fp32_max_rel_err"] <= FP32_MAX_REL_ERR)
    out["bf16_ok"] = bool(out["bf16_cosine"] >= BF16_MIN_COSINE)
    return out


def prepare_compile() -> None:
    """For ``torch.compile``: run the window attention's cached mask / gather-index lookups
    outside the compiled graphs. Dynamo otherwise traces through their ``lru_cache`` into the
    numpy mask builder on every block (about twice the graphs and graph breaks, measured on the
    tiny preset). Applied here, not in the library, because ``torch.compiler.disable`` imports
    ``torch._dynamo`` (≈ 1 s) and ``import swiftlib.models`` must stay light. Each stage and
    shift is its own specialisation of the same block code, so the recompile limit is raised
    (dynamo's default, 8, would send later stages back to eager without an error)."""
    import torch._dynamo

    from swiftlib.models.layers import attention

    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, max(64, getattr(torch._dynamo.config, knob)))

    for name in ("compute_attn_mask", "window_gather_index"):
        fn = getattr(attention, name)
        if not getattr(fn, "_swiftlib_compile_disabled", False):
            wrapped = torch.compiler.disable(fn)
            wrapped._swiftlib_compile_disabled = True
            setattr(attention, name, wrapped)


class Trainer:
    """One bf16-autocast training step of ``model`` on random data."""

    def __init__(
        self,
        preset: str,
        overrides: dict,
        grid: tuple[int, ...],
        device: torch.device,
        compile_model: bool = False,
        checkpointing: bool = False,
    ) -> None:
        torch.manual_seed(0)
        self.model = create_model(preset, **overrides).to(device).train()
        if checkpointing:
            self.model.set_grad_checkpointing(True)
        if compile_model:
            prepare_compile()
        self.fwd = (
            torch.compile(self.model.forward_features, dynamic=False)
            if compile_model
            else self.model.forward_features
        )
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
    """Out of device memory, also as cuBLAS / cuDNN report it when a workspace cannot be had."""
    msg = str(err).lower()
    return (
        isinstance(err, torch.cuda.OutOfMemoryError)
        or "out of memory" in msg
        or "status_alloc_failed" in msg
    )


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def try_step(tr: Trainer, n: int) -> bool:
    """One training step at batch ``n``: True if it ran, False on out-of-memory."""
    x = None
    try:
        x = tr.batch(n)
        tr.step(x)
        tr.sync()
        ok = True
    except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
        if not is_oom(err):
            raise
        ok = False
    del x
    tr.opt.zero_grad(set_to_none=True)
    free(tr.device)
    return ok


def largest_batch(tr: Trainer, max_batch: int, deadline: float) -> tuple[int, list]:
    """Doubling, then bisection until the gap is ≤ 1/16 of the batch; returns the largest
    batch that ran (the throughput at 1/16 below the true limit is the same)."""
    tried = []

    def fits(n: int) -> bool:
        ok = try_step(tr, n)
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
    while hi - lo > max(1, lo // 16) and time.time() < deadline:
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


def check_preset(
    preset: str, args, device: torch.device, deadline: float, matmul_peak: float | None
) -> dict:
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
            agr = res["agreement"]
            log(
                f"{preset}: fp32 rel err {agr['fp32_max_rel_err']:.2e} "
                f"({'ok' if agr['fp32_ok'] else 'FAIL'}), bf16 cosine {agr['bf16_cosine']:.5f} "
                f"({'ok' if agr['bf16_ok'] else 'FAIL'})"
            )
        except Exception as err:  # keep going: throughput is still useful
            res["agreement"] = {"error": repr(err)}
            log(traceback.format_exc())
        free(device)
    peak = peak_tflops(device, args.peak_tflops)
    modes = [True] if args.compile_only else ([False, True] if args.compile else [False])
    for compiled in modes:
        tag = "compiled" if compiled else "eager"
        entry: dict = {}
        res[tag] = entry
        if time.time() > deadline:
            entry["skipped"] = "time budget"
            continue
        fixed = args.batch
        if compiled and fixed is None and "eager" in res:
            fixed = max(1, res["eager"].get("largest_batch", 2) // 2) or None
        try:
            ctx = sdpa_fast_only() if device.type == "cuda" else contextlib.nullcontext()
            measure = functools.partial(
                _throughput,
                preset,
                overrides,
                grid,
                device,
                compiled,
                args,
                deadline,
                flops1,
                peak,
                matmul_peak,
                fixed,
            )

            try:
                with ctx:
                    entry.update(measure())
                entry["sdpa_backends"] = "fused only" if device.type == "cuda" else "cpu"
            except RuntimeError as err:
                if is_oom(err) or device.type != "cuda":
                    raise
                log(f"{preset} {tag}: fused-only SDPA failed ({err}); retrying with all backends")
                free(device)
                entry.update(measure())
                entry["sdpa_backends"] = f"all (fused-only failed: {str(err)[:200]})"
        except Exception as err:
            entry["error"] = repr(err)
            log(traceback.format_exc())
        free(device)
    return res


def _throughput(
    preset,
    overrides,
    grid,
    device,
    compiled,
    args,
    deadline,
    flops1,
    peak,
    matmul_peak,
    fixed_batch=None,
) -> dict:
    tr = Trainer(
        preset,
        overrides,
        grid,
        device,
        compile_model=compiled,
        checkpointing=args.grad_checkpointing,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out: dict = {}
    if fixed_batch:
        # first step = compilation when compiled; on OOM step down by an eighth
        batch, t0 = fixed_batch, time.perf_counter()
        while batch >= 1 and not try_step(tr, batch):
            log(f"{preset}: batch {batch} OOM")
            batch = batch - max(1, batch // 8)
        out["first_step_s"] = time.perf_counter() - t0
        best, tried = max(batch, 0), [(fixed_batch, None)]
        batches = [best] if best else []
    else:
        log(f"{preset}: searching the largest batch (≤ {args.max_batch})")
        best, tried = largest_batch(tr, args.max_batch, deadline)
        batches = sorted({best, max(1, best // 2)}, reverse=True) if best else []
    out.update(largest_batch=best, batch_trials=tried)
    if compiled:
        out["largest_batch_note"] = "fixed batch (no search: each batch size recompiles)"
    for batch in batches:
        if time.time() > deadline:
            out.setdefault("skipped", []).append(batch)
            continue
        try:
            times = time_steps(tr, batch, args.warmup, args.repeats)
        except RuntimeError as err:  # at the edge of memory the timing loop can still OOM
            if not is_oom(err):
                raise
            out[f"batch_{batch}"] = {"error": "out of memory while timing"}
            free(device)
            continue
        t = statistics.median(times)
        flops = flops1 * batch
        row = {
            "step_s": t,
            "step_times": times,
            "samples_per_s": batch / t,
            "tflops": flops / t / 1e12,
        }
        if peak:
            row["mfu"] = flops / t / (peak * 1e12)
        if matmul_peak:
            row["fraction_of_measured_matmul"] = flops / t / (matmul_peak * 1e12)
        if device.type == "cuda":
            row["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        out[f"batch_{batch}"] = row
        log(
            f"{preset}{' compiled' if compiled else ''}: batch {batch}: {t * 1000:.0f} ms/step, "
            f"{batch / t:.2f} samples/s, {row['tflops']:.1f} TFLOP/s"
            + (f", MFU {row['mfu']:.1%}" if peak else "")
        )
    rows = [
        r for k, r in out.items() if k.startswith("batch_") and isinstance(r, dict) and "mfu" in r
    ]
    if rows:
        out["best_mfu"] = max(r["mfu"] for r in rows)
    del tr
    return out


def summary(report: dict) -> str:
    peak = report.get("peak_bf16_tflops")
    mm = report.get("measured_matmul_tflops")
    lines = [
        f"GPU check: {report['device']} (torch {report['torch']}), bf16 autocast, "
        f"fused AdamW, grid {report['grid_label']}, {report['wall_s']:.0f} s wall; MFU against "
        f"{peak or '—'} TFLOP/s dense bf16 (datasheet); bf16 8192³ matmul measured "
        f"{f'{mm:.0f}' if mm else '—'} TFLOP/s",
        "",
        "| preset | mode | batch | ms/step | samples/s | TFLOP/s | MFU | of matmul | max mem GB | "
        "CPU-vs-GPU fp32 rel err | bf16 cosine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        agr = r.get("agreement", {})
        fp32 = f"{agr['fp32_max_rel_err']:.1e}" if "fp32_max_rel_err" in agr else "—"
        cos = f"{agr['bf16_cosine']:.5f}" if "bf16_cosine" in agr else "—"
        if "skipped" in r:
            lines.append(
                f"| {r['preset']} | — | — | skipped: {r['skipped']} | | | | | | {fp32} | {cos} |"
            )
        for mode in ("eager", "compiled"):
            entry = r.get(mode)
            if not entry:
                continue
            if "error" in entry or "skipped" in entry:
                why = (
                    f"error: {entry['error'][:80]}"
                    if "error" in entry
                    else f"skipped: {entry['skipped']}"
                )
                lines.append(f"| {r['preset']} | {mode} | — | {why} | | | | | | {fp32} | {cos} |")
                continue
            for key, row in entry.items():
                if not key.startswith("batch_") or key == "batch_trials" or "step_s" not in row:
                    continue
                mfu = f"{row['mfu']:.1%}" if "mfu" in row else "—"
                frac = (
                    f"{row['fraction_of_measured_matmul']:.1%}"
                    if "fraction_of_measured_matmul" in row
                    else "—"
                )
                mem = f"{row['max_memory_gb']:.1f}" if "max_memory_gb" in row else "—"
                lines.append(
                    f"| {r['preset']} | {mode} | {key[6:]} | {row['step_s'] * 1000:.0f} | "
                    f"{row['samples_per_s']:.2f} | {row['tflops']:.1f} | {mfu} | {frac} | {mem} | "
                    f"{fp32} | {cos} |"
                )
    return "\n".join(lines)


def failures(results: list[dict], check_agreement: bool) -> list[str]:
    """What makes the exit status non-zero: failed or errored agreement, errored
    measurements, presets or modes skipped for the time budget."""
    bad = []
    for r in results:
        name = r["preset"]
        if "skipped" in r:
            bad.append(f"{name}: skipped ({r['skipped']})")
            continue
        if check_agreement:
            agr = r.get("agreement", {})
            if "error" in agr:
                bad.append(f"{name}: agreement errored: {agr['error'][:200]}")
            else:
                if not agr.get("fp32_ok"):
                    bad.append(
                        f"{name}: fp32 CPU-vs-GPU max rel err {agr.get('fp32_max_rel_err')} "
                        f"> {FP32_MAX_REL_ERR}"
                    )
                if not agr.get("bf16_ok"):
                    bad.append(f"{name}: bf16 cosine {agr.get('bf16_cosine')} < {BF16_MIN_COSINE}")
        for mode in ("eager", "compiled"):
            entry = r.get(mode)
            if entry is None:
                continue
            if "error" in entry:
                bad.append(f"{name} {mode}: {entry['error'][:200]}")
            elif "skipped" in entry:
                bad.append(f"{name} {mode}: skipped ({entry['skipped']})")
            elif not entry.get("largest_batch"):
                bad.append(f"{name} {mode}: not even batch 1 ran")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--grid", nargs=4, type=int, default=None, metavar=("D", "H", "W", "T"))
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny presets on CPU (or the given device) to test this script",
    )
    ap.add_argument("--device", default=None)
    ap.add_argument("--max-batch", type=int, default=None)
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help="time at this batch (stepping down on OOM) instead of searching",
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument(
        "--budget-s",
        type=float,
        default=240.0,
        help="stop starting new measurements after this many seconds",
    )
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--compile-only", action="store_true", help="measure torch.compile only")
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
        torch.set_float32_matmul_precision("high")  # TF32 for fp32 matmuls outside autocast
    deadline = t_start + args.budget_s
    if not args.dry_run:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    log(f"device {name}, torch {torch.__version__}, presets {args.presets}")
    matmul_peak = None
    if device.type == "cuda":
        try:
            matmul_peak = matmul_tflops(device)
            log(f"bf16 8192³ matmul: {matmul_peak:.0f} TFLOP/s")
        except Exception as err:  # informational only
            log(f"matmul ceiling not measured: {err!r}")

    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "benchmarks" / "_work"
    path = args.json or out_dir / "gpu_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    report: dict = {}

    def write() -> None:
        report.update(
            {
                "device": name,
                "torch": torch.__version__,
                "dry_run": args.dry_run,
                "cuda": torch.version.cuda,
                "args": {k: str(v) for k, v in vars(args).items()},
                "grid_label": "×".join(map(str, args.grid)) if args.grid else "preset img_size",
                "peak_bf16_tflops": peak_tflops(device, args.peak_tflops),
                "measured_matmul_tflops": matmul_peak,
                "wall_s": time.time() - t_start,
                "results": results,
            }
        )
        path.write_text(json.dumps(report, indent=1, default=str))

    for preset in args.presets:
        if time.time() > deadline:
            results.append({"preset": preset, "skipped": "time budget"})
        else:
            results.append(check_preset(preset, args, device, deadline, matmul_peak))
        write()
    bad = failures(results, check_agreement=not args.skip_agreement)
    report["failures"] = bad
    report["ok"] = not bad
    write()
    print(summary(report))
    log(f"wrote {path} ({report['wall_s']:.0f} s)")
    for b in bad:
        log(f"FAILED: {b}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
