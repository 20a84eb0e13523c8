"""``results.json``: one per run (DESIGN §7). Tests, SLURM post-processing, dashboards and the
demo read it; notebooks end with :func:`save_results`."""

from __future__ import annotations

import math
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from swiftlib.utils.io import atomic_write_json, read_json

__all__ = ["KINDS", "save_results", "load_results", "versions"]

KINDS = ("pretrain", "finetune", "tune", "fewshot", "embed", "attribute", "data")


def versions() -> dict[str, str]:
    """Versions of swiftlib, Python and the main libraries that are importable."""
    from swiftlib import __version__

    out = {"swiftlib": __version__, "python": platform.python_version()}
    for pkg in (
        "torch",
        "lightning",
        "torchmetrics",
        "monai",
        "nibabel",
        "nilearn",
        "h5py",
        "numpy",
        "deepspeed",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _relative(value: Any, run_dir: Path) -> Any:
    if isinstance(value, (str, Path)):
        p = Path(value)
        try:
            return (
                str(p.resolve().relative_to(run_dir.resolve()))
                if p.is_absolute() or p.exists()
                else str(value)
            )
        except ValueError:
            return str(value)
    return value


def _clean(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if "/" not in k:
            raise ValueError(f"metric name {k!r}: expected 'split/name' (e.g. 'test/auroc')")
        v = float(v)
        out[k] = None if math.isnan(v) or math.isinf(v) else v
    return out


def save_results(
    run_dir,
    kind: str,
    metrics: dict | None = None,
    parameters: dict | None = None,
    artifacts: dict | None = None,
    timings: dict | None = None,
    notebook: str | None = None,
    status: str = "ok",
    error: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``run_dir/results.json`` atomically; paths inside ``run_dir`` become relative.

    NaN/Inf metrics are written as ``null`` (JSON has no NaN).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    if status not in ("ok", "failed"):
        raise ValueError(f"status={status!r}: expected 'ok' or 'failed'")
    run_dir = Path(run_dir)
    doc = {
        "kind": kind,
        "notebook": notebook,
        "parameters": parameters or {},
        "metrics": _clean(metrics or {}),
        "artifacts": {k: _relative(v, run_dir) for k, v in (artifacts or {}).items()},
        "timings": {k: round(float(v), 3) for k, v in (timings or {}).items()},
        "versions": versions(),
        "status": status,
        "error": error,
    }
    if extra:
        doc.update(extra)
    return atomic_write_json(run_dir / "results.json", doc)


def load_results(run_dir) -> dict:
    p = Path(run_dir)
    return read_json(p / "results.json" if p.is_dir() else p)
