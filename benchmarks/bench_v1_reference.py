"""``swift_v1`` against the public SwiFT v1 code: same weights, same output, step time and memory.

The reference is the public repository (https://github.com/Transconnectome/SwiFT), passed as
a checkout with ``--reference PATH`` (or ``SWIFT_V1_REFERENCE``); its model module
``project/module/models/swin4d_transformer_ver7.py`` is imported from there (nothing of it is
copied into swiftlib). It needs ``monai`` and ``einops``, both in the swiftlib environment.

Steps, at ``--threads`` threads, fp32, batch 1, input ``(1, 1, D, H, W, T)``:

1. **check** (one subprocess): build the reference ``SwinTransformer4D`` (seed 0, its own
   initialisation), map its ``state_dict`` through :func:`swiftlib.models.swift_v1.
   checkpoint_filter_fn` into ``swift_v1_paper`` (every encoder tensor must load), and
   assert that the outputs agree to ``--atol`` (1e-4) and the input gradients of
   ``mean(out²)`` to ``--grad-rtol`` relative to their largest value. The reference weights
   are saved to a temporary file for the timing processes.
2. **timing rounds**: each round runs the reference and swiftlib in fresh subprocesses
   (alternating which goes first), each loading the same weights and timing
   ``mean(out²).backward()`` steps: median of ``--repeats`` after ``--warmup``; each process
   reports its own peak RSS (``ru_maxrss``). A round's speed-up is reference median /
   swiftlib median; the figure printed is the median over rounds (each round is listed, with
   the 1-minute load average: on a shared machine only ratios within one run mean much).

Usage::

    git clone https://github.com/Transconnectome/SwiFT /tmp/SwiFT
    OMP_NUM_THREADS=2 python benchmarks/bench_v1_reference.py --reference /tmp/SwiFT
    python benchmarks/bench_v1_reference.py --reference /tmp/SwiFT --grid 48 48 48 20 --rounds 1

Without a reference checkout it prints how to get one and exits 0 (``make bench`` runs every
benchmark without arguments).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REF_MODULE = Path("project/module/models/swin4d_transformer_ver7.py")
PRESET = "swift_v1_paper"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def reference_module(reference: Path) -> types.ModuleType:
    """Import ``swin4d_transformer_ver7`` from a SwiFT checkout without running the package
    ``__init__`` files (they import the whole training stack)."""
    path = Path(reference) / REF_MODULE
    if not path.is_file():
        raise FileNotFoundError(
            f"--reference {reference}: {REF_MODULE} not found there; expected a checkout of "
            "https://github.com/Transconnectome/SwiFT"
        )
    import torch

    # The reference calls torch.cuda.nvtx.range_push/pop in PatchEmbed.forward, which raise
    # on CPU-only torch builds; they are profiling markers with no effect on the numbers.
    if not torch.cuda.is_available():
        torch.cuda.nvtx.range_push = lambda *a, **k: None
        torch.cuda.nvtx.range_pop = lambda *a, **k: None
    pkg = types.ModuleType("swift_v1_reference")
    pkg.__path__ = [str(path.parent)]
    sys.modules["swift_v1_reference"] = pkg
    name = "swift_v1_reference.swin4d_transformer_ver7"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_reference(reference: Path, grid: tuple[int, int, int, int]):
    """The reference encoder with the ``swift_v1_paper`` hyper-parameters at ``grid``."""
    import contextlib
    import io

    sys.path.insert(0, str(REPO))
    from swiftlib.models import create_model

    cfg = create_model(PRESET, img_size=grid).cfg
    module = reference_module(reference)
    with contextlib.redirect_stdout(io.StringIO()):  # its __init__ prints the sizes
        model = module.SwinTransformer4D(
            img_size=tuple(cfg.img_size),
            in_chans=cfg.in_chans,
            embed_dim=cfg.embed_dim,
            window_size=tuple(cfg.window_size),
            first_window_size=tuple(cfg.first_window_size),
            patch_size=tuple(cfg.patch_size),
            depths=tuple(cfg.depths),
            num_heads=tuple(cfg.num_heads),
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.0,
            c_multiplier=cfg.c_multiplier,
            last_layer_full_MSA=cfg.last_layer_full_msa,
        )
    return model


def build_ours(grid: tuple[int, int, int, int], ref_state: dict):
    """``swift_v1_paper`` at ``grid`` with the reference weights (through the checkpoint map)."""
    sys.path.insert(0, str(REPO))
    from swiftlib.models import create_model
    from swiftlib.models.swift_v1 import checkpoint_filter_fn

    model = create_model(PRESET, img_size=grid)
    mapped = checkpoint_filter_fn(ref_state, model)
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"reference weights did not load fully: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model


def _input(grid):
    import torch

    return torch.randn(1, 1, *grid, generator=torch.Generator().manual_seed(1))


def worker_check(reference: Path, grid, weights: Path, atol: float, grad_rtol: float) -> dict:
    import torch

    torch.manual_seed(0)
    ref = build_reference(reference, grid)
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    tmp = weights.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, weights)  # atomic
    ours = build_ours(grid, state)
    x = _input(grid)
    outs, grads = [], []
    for model, fwd in ((ref, ref.__call__), (ours, ours.forward_features)):
        model.train()
        xi = x.clone().requires_grad_(True)
        out = fwd(xi)
        out.pow(2).mean().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
    if outs[0].shape != outs[1].shape:
        raise AssertionError(
            f"output shapes differ: reference {tuple(outs[0].shape)}, swiftlib "
            f"{tuple(outs[1].shape)}"
        )
    out_err = (outs[0] - outs[1]).abs().max().item()
    grad_err = ((grads[0] - grads[1]).abs().max() / grads[0].abs().max()).item()
    if out_err > atol or grad_err > grad_rtol:
        raise AssertionError(
            f"swift_v1 differs from the reference at {grid}: max |Δout| {out_err:.2e} "
            f"(allowed {atol:g}), max |Δgrad|/max|grad| {grad_err:.2e} (allowed {grad_rtol:g})"
        )
    return {
        "out_max_abs_diff": out_err,
        "out_max_abs": outs[0].abs().max().item(),
        "grad_max_rel_diff": grad_err,
        "output_shape": list(outs[0].shape),
    }


def worker_time(which: str, reference: Path, grid, weights: Path, warmup: int, repeats: int):
    import torch

    state = torch.load(weights, weights_only=True)
    if which == "reference":
        model = build_reference(reference, grid)
        model.load_state_dict(state)
        fwd = model.__call__
    else:
        model = build_ours(grid, state)
        fwd = model.forward_features
    model.train()
    x = _input(grid)
    rss_model = _rss_mb()

    def step():
        model.zero_grad(set_to_none=True)
        fwd(x).pow(2).mean().backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "which": which,
        "step_s": statistics.median(times),
        "step_times": times,
        "rss_model_mb": rss_model,
        "rss_peak_mb": _rss_mb(),
    }


def _run(args: argparse.Namespace, worker: str, weights: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        worker,
        "--weights",
        str(weights),
        "--reference",
        str(args.reference),
        "--grid",
        *map(str, args.grid),
        "--threads",
        str(args.threads),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--atol",
        str(args.atol),
        "--grad-rtol",
        str(args.grad_rtol),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{worker} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--reference",
        type=Path,
        default=os.environ.get("SWIFT_V1_REFERENCE"),
        help="checkout of Transconnectome/SwiFT (default: $SWIFT_V1_REFERENCE)",
    )
    ap.add_argument(
        "--grid", type=int, nargs=4, default=(96, 96, 96, 20), metavar=("D", "H", "W", "T")
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--grad-rtol", type=float, default=1e-4)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--worker", choices=("check", "reference", "swiftlib"), help=argparse.SUPPRESS)
    ap.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    grid = tuple(args.grid)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        if args.worker == "check":
            res = worker_check(args.reference, grid, args.weights, args.atol, args.grad_rtol)
        else:
            res = worker_time(
                args.worker, args.reference, grid, args.weights, args.warmup, args.repeats
            )
        print(json.dumps(res))
        return 0

    if args.reference is None:
        print(
            "bench_v1_reference: skipped, no reference checkout. Run with --reference PATH "
            "(or SWIFT_V1_REFERENCE=PATH), PATH a clone of "
            "https://github.com/Transconnectome/SwiFT"
        )
        return 0
    reference_module(args.reference)  # fail early with a clear message if the path is wrong
    if args.rounds < 1 or args.repeats < 1:
        ap.error(f"--rounds ({args.rounds}) and --repeats ({args.repeats}) must be ≥ 1")

    with tempfile.TemporaryDirectory(prefix="swift_v1_ref_") as tmp:
        weights = Path(tmp) / "reference_weights.pt"
        check = _run(args, "check", weights)
        print(
            f"outputs agree: max |Δout| {check['out_max_abs_diff']:.2e} (|out| up to "
            f"{check['out_max_abs']:.2f}), input-gradient max rel. diff "
            f"{check['grad_max_rel_diff']:.2e}, output {check['output_shape']}",
            flush=True,
        )
        rounds = []
        for r in range(args.rounds):
            order = ("reference", "swiftlib") if r % 2 == 0 else ("swiftlib", "reference")
            load = os.getloadavg()[0]
            res = {w: _run(args, w, weights) for w in order}
            row = {
                "round": r + 1,
                "load_1m": load,
                "reference_s": res["reference"]["step_s"],
                "swiftlib_s": res["swiftlib"]["step_s"],
                "speedup": res["reference"]["step_s"] / res["swiftlib"]["step_s"],
                "reference_rss_mb": res["reference"]["rss_peak_mb"],
                "swiftlib_rss_mb": res["swiftlib"]["rss_peak_mb"],
                "rss_ratio": res["swiftlib"]["rss_peak_mb"] / res["reference"]["rss_peak_mb"],
                "runs": res,
            }
            rounds.append(row)
            print(
                f"round {r + 1} (load {load:.1f}): reference {row['reference_s']:.3f} s, "
                f"swiftlib {row['swiftlib_s']:.3f} s -> {row['speedup']:.2f}x; peak RSS "
                f"{row['reference_rss_mb']:.0f} / {row['swiftlib_rss_mb']:.0f} MB -> "
                f"{row['rss_ratio']:.2f}x",
                flush=True,
            )
    speedup = statistics.median(r["speedup"] for r in rounds)
    rss_ratio = statistics.median(r["rss_ratio"] for r in rounds)
    per_round = " / ".join(f"{r['speedup']:.2f}" for r in rounds)
    print(
        f"\nswift_v1 vs SwiFT v1 reference, fwd+bwd {'x'.join(map(str, grid))}, batch 1, fp32, "
        f"{args.threads} threads, median of {args.rounds} rounds ({args.repeats} steps each): "
        f"{speedup:.2f}x faster (rounds {per_round}), "
        f"peak RSS {rss_ratio:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "grid": list(grid),
                    "threads": args.threads,
                    "check": check,
                    "rounds": rounds,
                    "speedup": speedup,
                    "rss_ratio": rss_ratio,
                },
                indent=1,
            )
        )
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
