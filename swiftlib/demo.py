"""``swiftlib demo``: the whole pipeline on the synthetic cohort, headless, with a summary.

Stages that exist so far: synthesise the cohort (store + a NIfTI export of a few subjects),
preprocess that export through the real-data path, and check both stores agree. Later
stages (pretraining, fine-tuning, interpretation) are appended here as they land.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DemoStage", "run_demo", "format_summary"]

log = logging.getLogger(__name__)


@dataclass
class DemoStage:
    name: str
    seconds: float
    metrics: dict = field(default_factory=dict)
    path: str = ""


def run_demo(out_dir="data/demo", num_subjects: int = 40, export_subjects: int = 8, seed: int = 0,
             progress: bool = True) -> list[DemoStage]:
    """Run every available stage into ``out_dir``; returns one :class:`DemoStage` per stage."""
    from swiftlib.data.preprocess import preprocess
    from swiftlib.data.store import open_store
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    out = Path(out_dir)
    stages: list[DemoStage] = []

    t0 = time.perf_counter()
    cfg = SyntheticConfig(num_subjects=num_subjects, seed=seed)
    store = make_synthetic_cohort(out / "store_synthetic", config=cfg, export_nifti=out / "synthetic_bids",
                                  export_subjects=export_subjects, progress=progress)
    s = store.summary()
    stages.append(DemoStage("synthesise cohort", time.perf_counter() - t0,
                            {"subjects": s["subjects"], "grid": "x".join(map(str, s["grid"])),
                             "MB": round(s["bytes_on_disk"] / 1e6, 1)}, str(store.root)))

    t0 = time.perf_counter()
    pcfg = cfg.preprocess_config()
    report = preprocess(out / "synthetic_bids", out / "store_from_nifti", phenotype=out / "synthetic_bids" / "participants.tsv",
                        dataset="synthetic", config=pcfg, progress=progress)
    if not report.ok:
        raise RuntimeError(f"demo preprocessing failed for {report.failed}")
    pre = open_store(out / "store_from_nifti")
    # the real-data path must reproduce the synthetic store bit for bit
    sid = pre.subject_ids[0]
    identical = bool(np.array_equal(pre.read_subject(sid), store.read_subject(sid)))
    stages.append(DemoStage("preprocess NIfTI export", time.perf_counter() - t0,
                            {"written": len(report.written), "skipped": len(report.skipped),
                             "failed": len(report.failed), "identical_to_synthetic": identical}, str(pre.root)))
    return stages


def format_summary(stages: list[DemoStage]) -> str:
    rows = [("stage", "wall s", "key metrics", "path")]
    for st in stages:
        metrics = ", ".join(f"{k}={v}" for k, v in st.metrics.items())
        rows.append((st.name, f"{st.seconds:.1f}", metrics, st.path))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
