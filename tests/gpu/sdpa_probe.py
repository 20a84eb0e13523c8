"""Which SDPA kernel the SwiFT v2 window attention runs (used by ``test_attention.py``).

Run as ``python -m tests.gpu.sdpa_probe OUT_JSON [--presets …] [--grid D H W T] [--batch B]``
in a process of its own: a kernel that fails badly on some shape must not take the CUDA
context of the rest of the GPU suite with it.

For each preset one bf16-autocast training step (forward + backward) is profiled and the
``aten::_scaled_dot_product_*`` operators it ran are read off (flash / efficient / cudnn /
math). Every distinct attention call of that step (q shape, with or without the shift/padding
mask) is then replayed with one backend allowed at a time (``torch.nn.attention.sdpa_kernel``):
which run, how fast (forward + backward, ms), and which one the default dispatch picks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import torch
import torch.nn.functional as F

FUSED = ("flash", "efficient", "cudnn")
BACKENDS = (*FUSED, "math")
_SDP_NAMES = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}
#: profiler operator-name fragment → backend
_OP_BACKEND = {
    "flash_attention": "flash",
    "efficient_attention": "efficient",
    "cudnn_attention": "cudnn",
    "attention_math": "math",
}


def backend_of(op: str) -> str | None:
    if not op.startswith("aten::_scaled_dot_product"):
        return None
    return next((b for frag, b in _OP_BACKEND.items() if frag in op), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sdpa_ops(fn, device: torch.device) -> dict[str, int]:
    """``{aten SDPA operator: calls}`` that ``fn()`` ran (CPU-side profiler events)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
        _sync(device)
    return {e.key: e.count for e in prof.key_averages() if backend_of(e.key)}


class CallRecorder:
    """Stands in for ``F.scaled_dot_product_attention``: keeps one example of every distinct
    call signature (q shape and dtype, mask shape) and calls the real function."""

    def __init__(self, sdpa) -> None:
        self.sdpa = sdpa
        self.calls: dict[tuple, dict] = {}

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        key = (tuple(q.shape), str(q.dtype), None if attn_mask is None else tuple(attn_mask.shape))
        if key not in self.calls:
            self.calls[key] = {
                "q": q.detach().clone(),
                "k": k.detach().clone(),
                "v": v.detach().clone(),
                "mask": None if attn_mask is None else attn_mask.detach().clone(),
                "scale": scale,
            }
        return self.sdpa(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            **kw,
        )


def fwd_bwd(call: dict) -> None:
    q, k, v = (call[n].clone().requires_grad_(True) for n in "qkv")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=call["mask"], scale=call["scale"])
    out.backward(torch.ones_like(out))


def probe(call: dict, backend: str, repeats: int = 5) -> dict:
    """Run the call forward + backward with only ``backend`` allowed; time it (ms)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not hasattr(SDPBackend, _SDP_NAMES[backend]):
        return {
            "ok": False,
            "error": f"torch {torch.__version__} has no SDPBackend.{_SDP_NAMES[backend]}",
        }
    device = call["q"].device
    try:
        with warnings.catch_warnings(), sdpa_kernel([getattr(SDPBackend, _SDP_NAMES[backend])]):
            warnings.simplefilter("ignore")  # the "flash attention does not support …" reasons
            for _ in range(2):
                fwd_bwd(call)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                fwd_bwd(call)
            _sync(device)
        return {"ok": True, "ms_fwd_bwd": (time.perf_counter() - t0) * 1000 / repeats}
    except RuntimeError as err:
        return {"ok": False, "error": str(err).strip().splitlines()[0][:300]}


def describe(key: tuple, call: dict) -> dict:
    q_shape, dtype, mask_shape = key
    return {
        "q_shape": list(q_shape),
        "dtype": dtype,
        "head_dim": q_shape[-1],
        "tokens": q_shape[-2],
        "mask_shape": list(mask_shape) if mask_shape else None,
        "mask_dtype": str(call["mask"].dtype) if call["mask"] is not None else None,
    }


def probe_preset(preset: str, grid, batch: int, device: torch.device) -> dict:
    from swiftlib.models import create_model

    torch.manual_seed(0)
    model = create_model(preset, drop_path_rate=0.0).to(device).train()
    x = torch.randn(batch, 1, *grid, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model.forward_features(x)
        out.float().pow(2).mean().backward()

    recorder = CallRecorder(F.scaled_dot_product_attention)
    F.scaled_dot_product_attention = recorder  # the attention module calls it through F
    try:
        step()  # warm-up: masks and gather indices get cached
        ops = sdpa_ops(step, device)
    finally:
        F.scaled_dot_product_attention = recorder.sdpa
    model.zero_grad(set_to_none=True)
    calls = []
    for key, call in recorder.calls.items():
        row = describe(key, call)
        row["default"] = sorted(
            {backend_of(op) for op in sdpa_ops(lambda call=call: fwd_bwd(call), device)}
        )
        row["probe"] = {b: probe(call, b) for b in BACKENDS}
        row["fused_ok"] = [b for b in FUSED if row["probe"][b]["ok"]]
        calls.append(row)
    return {
        "model_ops": ops,
        "model_backends": sorted({backend_of(op) for op in ops}),
        "calls": calls,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="JSON file to write")
    ap.add_argument("--presets", nargs="+", default=["swift_v2_51m", "swift_v2_202m"])
    ap.add_argument(
        "--grid", nargs=4, type=int, default=[96, 96, 96, 20], metavar=("D", "H", "W", "T")
    )
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    report = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "grid": args.grid,
        "batch": args.batch,
        "precision": "bf16 autocast, forward + backward",
        "presets": {},
    }
    problems = []
    for preset in args.presets:
        res = probe_preset(preset, tuple(args.grid), args.batch, device)
        report["presets"][preset] = res
        for row in res["calls"]:
            if not row["fused_ok"]:
                problems.append(
                    f"{preset}: no fused backend runs q {row['q_shape']} mask {row['mask_shape']}"
                )
        used = res["model_backends"]
        if not used or any(b not in FUSED for b in used):
            problems.append(
                f"{preset}: the model's default dispatch ran {used} ({res['model_ops']})"
            )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["problems"] = problems
    report["fused_only"] = not problems
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({p: r["model_backends"] for p, r in report["presets"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
