"""Where a SwiFT v2 training step spends its GPU time (≤ 2 minutes on one H200).

Needs only torch and this repository. For each preset: the same bf16-autocast training step
as ``gpu_check.py`` (forward_features + backward + fused AdamW) at ``--batch``, warmed up, then
``--steps`` steps under ``torch.profiler``. Writes per preset:

- the aten operators by self CUDA time (what the model asks for: matmuls, attention, copies
  from window partition/roll, norms, activations),
- the CUDA kernels grouped into GEMM / attention / normalisation / copy-gather / elementwise /
  optimiser / other, each with its share of the step,

to ``$OUT/profile.txt`` (else ``benchmarks/_work/profile.txt``) and stdout. The shares say
which change could raise MFU: a GEMM share far below 1 means the step is bound by
memory-bound kernels around the matmuls, not by the matmuls themselves.

    python benchmarks/gpu_profile.py                                   # 202m @ 32, 51m @ 64
    python benchmarks/gpu_profile.py --dry-run                         # tiny preset on CPU
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_check import Trainer  # noqa: E402

#: kernel-name patterns → group (first match wins)
GROUPS = (
    ("attention", r"fmha|flash|cudnn|sdpa|attention|attn"),
    ("gemm", r"gemm|cutlass|xmma|nvjet|sm90_|sm80_|ampere_|hopper_|cublas|matmul|addmm|\bmm\b|bmm"),
    ("optimiser", r"adam|multi_tensor|foreach"),
    ("normalisation", r"layer_norm|layernorm|rms_norm|norm_kernel"),
    (
        "copy-gather",
        r"copy|gather|index|scatter|cat|roll|permute|transpose|elementwise_kernel_with_index",
    ),
    ("elementwise", r"elementwise|vectorized|gelu|silu|mul|add|reduce"),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, pattern in GROUPS:
        if re.search(pattern, low):
            return group
    return "other"


def profile_preset(preset: str, batch: int, steps: int, device: torch.device, grid) -> str:
    from torch.profiler import ProfilerActivity, profile

    tr = Trainer(preset, {}, grid, device)
    x = tr.batch(batch)
    for _ in range(3):
        tr.step(x)
    tr.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.step(x)
    tr.sync()
    step_ms = (time.perf_counter() - t0) / steps * 1e3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            tr.step(x)
        tr.sync()
    use_cuda = device.type == "cuda"
    sort = "self_cuda_time_total" if use_cuda else "self_cpu_time_total"
    lines = [
        f"## {preset} batch {batch} grid {'x'.join(map(str, grid))}: {step_ms:.1f} ms/step "
        "(unprofiled)",
        "",
        "### aten operators by self device time",
        "",
        prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60),
    ]
    if use_cuda:
        per_group: dict[str, float] = defaultdict(float)
        per_kernel: dict[str, float] = defaultdict(float)
        for ev in prof.events():
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                per_group[group_of(ev.name)] += ev.device_time
                per_kernel[ev.name] += ev.device_time
        total = sum(per_group.values()) or 1.0
        lines += [
            "",
            f"### kernels by group (total {total / 1e3 / steps:.1f} ms of device time per step)",
            "",
        ]
        for group, us in sorted(per_group.items(), key=lambda kv: -kv[1]):
            lines.append(f"{group:14s} {us / 1e3 / steps:9.1f} ms/step  {100 * us / total:5.1f} %")
        lines += ["", "### top kernels", ""]
        for name, us in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:20]:
            lines.append(f"{100 * us / total:5.1f} %  {group_of(name):13s} {name[:110]}")
    del tr
    if use_cuda:
        torch.cuda.empty_cache()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["swift_v2_202m", "swift_v2_51m"])
    ap.add_argument("--batches", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="swift_v2_test on CPU at a small grid")
    args = ap.parse_args(argv)
    if args.dry_run:
        device, grid, presets, batches = (
            torch.device("cpu"),
            (16, 20, 12, 6),
            ["swift_v2_test"],
            [2],
        )
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --dry-run on a CPU", file=sys.stderr)
            return 2
        torch.set_float32_matmul_precision("high")
        device, grid, presets, batches = (
            torch.device("cuda"),
            (96, 96, 96, 20),
            args.presets,
            args.batches,
        )
    out = Path(os.environ.get("OUT") or REPO / "benchmarks" / "_work") / "profile.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = ""
    for preset, batch in zip(presets, batches):
        try:
            text += profile_preset(preset, batch, args.steps, device, grid)
        except Exception as e:  # noqa: BLE001 - keep the other preset's profile
            text += f"## {preset} batch {batch}: failed: {type(e).__name__}: {e}\n"
        out.write_text(text)
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
