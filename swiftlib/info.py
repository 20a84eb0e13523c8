"""``swiftlib info``: a JSON-able summary of a store, a checkpoint or a run directory.

A checkpoint is summarised in one screen (model, kind, task and label, normalisation contract,
epoch/step, the monitored score and, when it lives in a run directory, that run's metrics);
``full=True`` (``--full``) gives every saved field (hyper-parameters, RNG state, …)."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["describe"]


def describe(path, verify: str = "size", full: bool = False) -> dict:
    """Summarise ``path``: a store (has manifest.json), a run (has results.json), or a
    checkpoint file (.ckpt/.pt/.pth, read with ``weights_only=True``); ``full``: every field
    of a checkpoint instead of its one-screen summary."""
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
        out = _describe_checkpoint(p)
        return out if full else _summary(p, out)
    from swiftlib.training.deepspeed import is_deepspeed_checkpoint

    if is_deepspeed_checkpoint(p):
        out = _describe_deepspeed(p)
        return out if full else _summary(p, out)
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
        for key in ("epoch", "global_step", "hyper_parameters", "swiftlib", "callbacks"):
            if key in ckpt:
                out[key] = ckpt[key]
    return out


def _number(value):
    """A saved score (tensor or number) as a float; ``None`` for a missing or infinite one
    (Lightning's placeholder before the first validation)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else round(v, 6)


def _best_score(callbacks) -> dict:
    """``{monitor: best score}`` from the checkpoint's ModelCheckpoint state."""
    out = {}
    for state in (callbacks or {}).values():
        if isinstance(state, dict) and state.get("monitor"):
            out[state["monitor"]] = _number(state.get("best_model_score"))
    return out


def _run_of(p: Path) -> Path | None:
    """The run directory a checkpoint belongs to (``RUN/checkpoints/x.ckpt``), if it has a
    results.json."""
    for folder in (p.parent.parent, p.parent):
        if (folder / "results.json").is_file():
            return folder
    return None


def _summary(p: Path, full: dict) -> dict:
    """The one-screen view of :func:`_describe_checkpoint` / :func:`_describe_deepspeed`."""
    meta = full.get("swiftlib") or {}
    config = (full.get("hyper_parameters") or {}).get("config") or {}
    out = {
        "kind": full["kind"],
        "path": full["path"],
        "model": meta.get("model") or config.get("model"),
        "checkpoint_kind": meta.get("kind"),
        "num_parameters": full.get("num_parameters"),
        "bytes": full.get("bytes"),
        "epoch": full.get("epoch"),
        "global_step": full.get("global_step"),
    }
    if meta.get("model_overrides"):
        out["model_overrides"] = meta["model_overrides"]
    task = {k: config[k] for k in ("task", "label", "num_classes") if config.get(k) is not None}
    if task and meta.get("kind") == "finetune":
        out["task"] = task
    if meta.get("contract"):
        out["contract"] = meta["contract"]
    best = _best_score(full.get("callbacks"))
    if best:
        out["best_score"] = best
    for key in ("zero_stage", "world_size", "consolidated"):
        if key in full:
            out[key] = full[key]
    run = _run_of(p)
    if run is not None:
        from swiftlib.utils.io import read_json

        try:
            res = read_json(run / "results.json")
        except ValueError:
            res = {}
        metrics = res.get("metrics") or {}
        order = {"test": 0, "val": 1}  # what a checkpoint is judged by first
        metrics = dict(sorted(metrics.items(), key=lambda kv: order.get(kv[0].split("/")[0], 2)))
        out["run"] = {
            "path": str(run),
            "status": res.get("status"),
            "metrics": {k: _number(v) for k, v in list(metrics.items())[:12]},
        }
        if len(metrics) > 12:
            out["run"]["more_metrics"] = f"{len(metrics) - 12} more: swiftlib info {run}"
    if not meta:
        out["note"] = "not a swiftlib checkpoint (no 'swiftlib' metadata)"
        out["top_level_keys"] = full.get("top_level_keys")
    out["full"] = f"swiftlib info --full {p}  (hyper-parameters, RNG state, every field)"
    return {k: v for k, v in out.items() if v is not None}


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
