"""``swiftlib info``: a JSON-able summary of a store, a checkpoint or a run directory."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["describe"]


def describe(path, verify: str = "size") -> dict:
    """Summarise ``path``: a store (has manifest.json), a run (has results.json), or a
    checkpoint file (.ckpt/.pt/.pth, read with ``weights_only=True``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir() and (p / "manifest.json").exists():
        from swiftlib.data.store import open_store

        return {"kind": "store", **open_store(p, verify=verify).summary()}
    if p.is_dir() and (p / "results.json").exists() or p.name == "results.json":
        from swiftlib.utils.io import read_json

        res = read_json(p / "results.json" if p.is_dir() else p)
        return {
            "kind": "run",
            "path": str(p),
            **{
                k: res.get(k)
                for k in ("kind", "status", "metrics", "artifacts", "timings", "error")
            },
        }
    if p.is_file() and p.suffix in (".ckpt", ".pt", ".pth"):
        return _describe_checkpoint(p)
    from swiftlib.training.deepspeed import is_deepspeed_checkpoint

    if is_deepspeed_checkpoint(p):
        return _describe_deepspeed(p)
    raise ValueError(
        f"{p}: not a store (no manifest.json), a run directory (no results.json) or a checkpoint "
        "(.ckpt/.pt/.pth file or DeepSpeed folder); expected one of those"
    )


def _describe_checkpoint(p: Path) -> dict:
    from swiftlib.tasks.common import read_checkpoint

    ckpt = read_checkpoint(p)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    tensors = {k: v for k, v in sd.items() if hasattr(v, "shape")}
    out = {
        "kind": "checkpoint",
        "path": str(p),
        "bytes": p.stat().st_size,
        "num_tensors": len(tensors),
        "num_parameters": int(sum(v.numel() for v in tensors.values())),
        "top_level_keys": sorted(ckpt)[:20] if isinstance(ckpt, dict) else [],
    }
    if isinstance(ckpt, dict):
        for key in ("epoch", "global_step", "hyper_parameters", "swiftlib"):
            if key in ckpt:
                out[key] = ckpt[key]
    return out


def _describe_deepspeed(p: Path) -> dict:
    """A DeepSpeed checkpoint folder, read without converting it (shards checked, metadata
    and parameter shapes from the model-states file); ``consolidated`` is the fp32 copy when
    one is current."""
    from swiftlib.training.deepspeed import current_consolidated, inspect_deepspeed_checkpoint

    info = inspect_deepspeed_checkpoint(p)
    client = info["client"]
    shapes = {}
    for group in client.get("param_shapes") or []:
        shapes.update(group)
    fp32 = current_consolidated(p)
    out = {
        "kind": "deepspeed_checkpoint",
        "path": str(p),
        "bytes": sum(f.stat().st_size for f in p.rglob("*") if f.is_file()),
        "zero_stage": info["zero_stage"],
        "world_size": info["world_size"],
        "tag": info["tag_dir"].name,
        "num_parameters": int(sum(math.prod(s) for s in shapes.values())),
        "consolidated": str(fp32) if fp32 else None,
    }
    for key in ("epoch", "global_step", "hyper_parameters"):
        if key in client:
            out[key] = client[key]
    if info["meta"] is not None:
        out["swiftlib"] = info["meta"]
    return out
