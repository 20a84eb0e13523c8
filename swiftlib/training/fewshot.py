"""Few-shot curves: how much pretraining helps when labels are scarce.

A grid of fine-tuning runs — training subset sizes (e.g. 20, 50, 100, all participants) ×
initialisation (``scratch``, ``pretrained`` checkpoint) × mode (linear probe, partial
unfreeze, full) × seeds — each one :func:`swiftlib.training.fit` call in its own run
directory under ``GRID_DIR/runs/``; their test metrics are collected in a tidy table
(``GRID_DIR/fewshot.csv`` and ``.parquet``, one row per run).

Pairing: for one seed, the subset of size ``n`` is the same participants for the scratch
and the pretrained run (nested across sizes, :func:`swiftlib.data.splits.few_shot_subset`),
and the training seed is the same, so the two inits are compared *pairwise*
(:func:`paired_comparison`: Wilcoxon signed-rank and paired t tests, with n and p).

The grid resumes: a cell whose run directory holds an ``ok`` ``results.json`` is not run
again (unless the pretrained checkpoint was rewritten since: its pretrained cells rerun); a
cell whose planned configuration changed is refused (use a new grid directory).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from swiftlib.utils.config import ConfigError, config_from_dict, config_to_dict

__all__ = [
    "FewShotGrid",
    "FewShotResult",
    "FewShotError",
    "run_fewshot",
    "load_fewshot",
    "paired_comparison",
    "grid_cells",
]

log = logging.getLogger(__name__)

INITS = ("scratch", "pretrained")
MODES = ("linear_probe", "unfreeze", "full")
TABLE = "fewshot.csv"


class FewShotError(ValueError):
    """The grid cannot run as asked; nothing was trained."""


@dataclass
class FewShotGrid:
    """The grid. ``sizes``: training participants (per store) or ``"all"``; ``modes``:
    ``linear_probe``, ``unfreeze`` (the top ``unfreeze_fraction`` of the encoder) and/or
    ``full``; ``seeds``: each seed draws its own nested subsets and training seed."""

    sizes: tuple[int | str, ...] = (20, 50, 100, "all")
    inits: tuple[str, ...] = INITS
    modes: tuple[str, ...] = MODES
    seeds: tuple[int, ...] = (0, 1, 2)
    unfreeze_fraction: float = 0.2

    def __post_init__(self):
        for name, valid in (("inits", INITS), ("modes", MODES)):
            v = tuple(getattr(self, name))
            if not v or any(c not in valid for c in v) or len(set(v)) != len(v):
                raise FewShotError(
                    f"few-shot {name}={v!r}: expected distinct choices among {valid}"
                )
            setattr(self, name, v)
        sizes = tuple(self.sizes)
        ok = all(
            (s == "all") or (isinstance(s, int) and not isinstance(s, bool) and s > 0)
            for s in sizes
        )
        if not sizes or not ok or len(set(sizes)) != len(sizes):
            raise FewShotError(
                f"few-shot sizes={sizes!r}: expected distinct positive integers and/or 'all'"
            )
        self.sizes = sizes
        seeds = tuple(self.seeds)
        if (
            not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise FewShotError(f"few-shot seeds={seeds!r}: expected distinct integers")
        self.seeds = seeds
        if not 0 < self.unfreeze_fraction <= 1:
            raise FewShotError(
                f"few-shot unfreeze_fraction={self.unfreeze_fraction}: expected in (0, 1]"
            )

    @classmethod
    def from_dict(cls, d: dict) -> FewShotGrid:
        try:
            return config_from_dict(cls, d)
        except ConfigError as e:
            raise FewShotError(f"few-shot grid: {e}") from None

    def to_dict(self) -> dict:
        return config_to_dict(self)

    def __len__(self) -> int:
        return len(self.sizes) * len(self.inits) * len(self.modes) * len(self.seeds)


def _mode_label(mode: str, fraction: float) -> str:
    return f"unfreeze_{fraction:g}" if mode == "unfreeze" else mode


def grid_cells(grid: FewShotGrid):
    """The cells in run order — seed, size, mode, then init — so that pairs finish together.
    Yields ``(name, size, init, mode, seed)``."""
    for seed in grid.seeds:
        for size in grid.sizes:
            for mode in grid.modes:
                for init in grid.inits:
                    label = _mode_label(mode, grid.unfreeze_fraction)
                    yield f"n{size}-{init}-{label}-seed{seed}", size, init, mode, seed


@dataclass
class FewShotResult:
    grid_dir: Path
    table: object  # pandas DataFrame: one row per cell
    metric: str  # the test metric the curves and the paired test use, e.g. "test/auroc"
    ran: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # finished before: not rerun
    failed: dict = field(default_factory=dict)  # cell -> error
    table_path: Path | None = None
    results_path: Path | None = None

    def paired(self, by: str | None = "mode", metric: str | None = None):
        return paired_comparison(self.table, metric or self.metric, by=by)

    @property
    def metrics(self) -> dict:
        """``results.json`` metrics: cell counts and the overall paired comparison."""
        out = {
            "fewshot/num_cells": float(len(self.table)),
            "fewshot/num_failed": float(len(self.failed)),
            "fewshot/num_ran": float(len(self.ran)),
        }
        paired = self.paired(by=None)
        if len(paired):
            row = paired.iloc[0]
            out.update(
                {
                    "fewshot/num_pairs": float(row["n_pairs"]),
                    "fewshot/mean_diff": float(row["mean_diff"]),
                    "fewshot/wilcoxon_p": float(row["wilcoxon_p"]),
                    "fewshot/t_p": float(row["t_p"]),
                }
            )
        out.update(self.metrics_by_size())
        return out

    def metrics_by_size(self) -> dict:
        """Per training size ``n`` (participants actually used): the mean test metric of each
        init over seeds, the Wilcoxon p-value of the pairs (``fewshot/n{N}_pretrained_auroc``,
        ``fewshot/n{N}_scratch_auroc``, ``fewshot/n{N}_p_value``), and the same at the
        smallest size under ``fewshot/smallest_*`` (the demo's verdict reads these)."""
        name = self.metric.split("/", 1)[-1]
        by_n = self.paired(by="n")
        by_n = by_n[by_n["group"] != "all"]
        out: dict = {}
        for _, row in by_n.iterrows():
            n = row["group"]
            out[f"fewshot/n{n}_pretrained_{name}"] = float(row["mean_pretrained"])
            out[f"fewshot/n{n}_scratch_{name}"] = float(row["mean_scratch"])
            out[f"fewshot/n{n}_p_value"] = float(row["wilcoxon_p"])
            out[f"fewshot/n{n}_mean_diff"] = float(row["mean_diff"])
            out[f"fewshot/n{n}_diff_ci_low"] = float(row["diff_ci_low"])
            out[f"fewshot/n{n}_diff_ci_high"] = float(row["diff_ci_high"])
            out[f"fewshot/n{n}_effect_dz"] = float(row["effect_dz"])
        if len(by_n):
            first = by_n.assign(_n=by_n["group"].astype(float)).sort_values("_n").iloc[0]
            out.update(
                {
                    "fewshot/smallest_n": float(first["group"]),
                    "fewshot/smallest_num_pairs": float(first["n_pairs"]),
                    "fewshot/smallest_mean_diff": float(first["mean_diff"]),
                    "fewshot/smallest_wilcoxon_p": float(first["wilcoxon_p"]),
                }
            )
        return out


def _ok_results(run_dir: Path) -> dict | None:
    p = run_dir / "results.json"
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text())
    except ValueError:
        return None
    return doc if doc.get("status") == "ok" else None


def _check_inputs(base: dict, grid: FewShotGrid, pretrained: str | None) -> int:
    """Refuse what would fail later; return the number of training participants (smallest store)."""
    from swiftlib.data.datamodule import DataConfig, FMRIDataModule
    from swiftlib.tasks.common import CHECKPOINT_KEY, read_checkpoint

    if "pretrained" in grid.inits:
        if not pretrained:
            raise FewShotError(
                "the grid has init 'pretrained' but no pretrained checkpoint was given; pass "
                "pretrained=PATH (e.g. a SimMIM run's checkpoints/best.ckpt) or inits=('scratch',)"
            )
        if not Path(pretrained).exists():
            raise FileNotFoundError(f"pretrained checkpoint {pretrained!r} does not exist")
        meta = read_checkpoint(pretrained).get(CHECKPOINT_KEY) or {}
        if meta.get("model") not in (None, base["task"]["model"]):
            raise FewShotError(
                f"pretrained checkpoint {pretrained!r} holds model {meta.get('model')!r}; the grid "
                f"fine-tunes {base['task']['model']!r}; make them equal"
            )
    data = dict(base["data"], few_shot_n=None)
    dm = FMRIDataModule(DataConfig.from_dict(data))
    dm.setup("fit")
    n_train = min(len(s.train) for s in dm.splits.values())
    too_big = [s for s in grid.sizes if s != "all" and s > n_train]
    if too_big:
        raise FewShotError(
            f"few-shot sizes {too_big} exceed the {n_train} training participants of the split; "
            f"use sizes ≤ {n_train} (or 'all')"
        )
    return n_train


def _cell_config(
    base: dict,
    run_dir: Path,
    size,
    init: str,
    mode: str,
    seed: int,
    grid: FewShotGrid,
    pretrained: str | None,
) -> dict:
    cfg = copy.deepcopy(base)
    cfg["run_dir"] = str(run_dir)
    cfg["seed"] = int(seed)
    cfg["data"].update(few_shot_n=None if size == "all" else int(size), few_shot_seed=int(seed))
    cfg["task"].update(
        mode=mode,
        unfreeze_fraction=grid.unfreeze_fraction if mode == "unfreeze" else None,
        unfreeze_last_k=None,
        init_from=str(pretrained) if init == "pretrained" else None,
        seed=int(seed),
    )
    return cfg


def run_fewshot(
    base_cfg,
    grid_dir,
    grid: FewShotGrid | dict | None = None,
    pretrained: str | None = None,
    metric: str | None = None,
) -> FewShotResult:
    """Run every cell of ``grid`` that has not finished yet, then collect the table.

    Args:
        base_cfg: a fine-tuning ``FitConfig`` or dict (data, model, trainer settings); its
            ``run_dir``, seed, mode, init and few-shot settings are replaced per cell.
        grid_dir: ``runs/<cell>/`` run directories, ``fewshot.csv``/``.parquet`` and the
            grid's ``results.json`` go here.
        pretrained: the encoder checkpoint for the ``pretrained`` cells (SimMIM, SwiFT v1 or
            fine-tuned).
        metric: the test metric for curves and the paired test (default: the task's
            monitored metric on the test split, ``test/auroc`` or ``test/r2``).
    """
    from swiftlib.tasks.finetune import MONITOR
    from swiftlib.training.config import FitConfig, label_task_type
    from swiftlib.training.fit import TrainingError, fit

    grid = (
        FewShotGrid()
        if grid is None
        else FewShotGrid.from_dict(grid)
        if isinstance(grid, dict)
        else grid
    )
    cfg = FitConfig.from_dict(base_cfg) if isinstance(base_cfg, dict) else base_cfg
    if cfg.kind != "finetune":
        raise FewShotError(
            f"base_cfg kind={cfg.kind!r}: few-shot curves fine-tune; use kind='finetune'"
        )
    base = cfg.to_dict()
    base["task"]["task"] = label_task_type(cfg)  # "auto": the type the store declares
    metric = metric or MONITOR[base["task"]["task"]][0].replace("val/", "test/")
    grid_dir = Path(grid_dir).expanduser().resolve()
    pretrained = str(Path(pretrained).expanduser().resolve()) if pretrained else None
    n_train = _check_inputs(base, grid, pretrained)
    cells = list(grid_cells(grid))
    plans = {}
    # every cell's config is checked before anything trains
    for name, size, init, mode, seed in cells:
        run_dir = grid_dir / "runs" / name
        plan = _cell_config(base, run_dir, size, init, mode, seed, grid, pretrained)
        FitConfig.from_dict(plan)
        planned = run_dir / "cell.json"
        if planned.is_file():
            before = json.loads(planned.read_text())
            if before != json.loads(json.dumps(plan)):
                keys = _diff_keys(before, plan)
                raise FewShotError(
                    f"{run_dir} was run with another configuration (differs in {keys[:5]}); use a "
                    "new grid directory for a different experiment, or delete that run"
                )
        plans[name] = plan
    grid_dir.mkdir(parents=True, exist_ok=True)
    (grid_dir / "grid.json").write_text(
        json.dumps(
            {
                "grid": grid.to_dict(),
                "n_train": n_train,
                "pretrained": pretrained,
                "metric": metric,
            },
            indent=2,
        )
    )
    ran, skipped, failed = [], [], {}
    stamp = _fingerprint(pretrained)
    todo = []
    for cell in cells:
        run_dir = grid_dir / "runs" / cell[0]
        if _ok_results(run_dir) is None:
            todo.append(cell)
        elif cell[2] == "pretrained" and _read_json(run_dir / "init.json") != stamp:
            log.warning(
                "few-shot cell %s: the pretrained checkpoint changed since it ran; running it "
                "again",
                cell[0],
            )
            todo.append(cell)
    log.info(
        "few-shot grid %s: %d cells, %d finished before, %d to run",
        grid_dir,
        len(cells),
        len(cells) - len(todo),
        len(todo),
    )
    skipped = [c[0] for c in cells if c not in todo]
    for i, (name, *_rest) in enumerate(todo, start=1):
        run_dir = grid_dir / "runs" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "cell.json").write_text(json.dumps(plans[name], indent=2))
        (run_dir / "init.json").write_text(
            json.dumps(stamp if plans[name]["task"]["init_from"] else None)
        )
        log.info("few-shot cell %d/%d: %s", i, len(todo), name)
        try:
            fit(plans[name])
            ran.append(name)
        except TrainingError as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                raise KeyboardInterrupt from e
            failed[name] = str(e)
            log.warning(
                "few-shot cell %s failed (%s); the grid continues, a rerun retries it", name, e
            )
    res = load_fewshot(grid_dir, grid=grid, metric=metric, n_train=n_train)
    res.ran, res.skipped, res.failed = ran, skipped, failed
    res.results_path = _write_results(res, grid, pretrained, base)
    return res


def _fingerprint(path: str | None) -> dict | None:
    """Size and modification time of the pretrained checkpoint: a pretrained cell reruns when
    the checkpoint was rewritten (e.g. pretraining ran again into the same folder)."""
    if not path:
        return None
    from swiftlib.tasks.common import resolve_checkpoint

    # a DeepSpeed folder: its consolidated file (rewritten when it changes)
    st = resolve_checkpoint(path).stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _diff_keys(a, b, prefix="") -> list[str]:
    b = json.loads(json.dumps(b))
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [prefix or "."] if a != b else []
    out = []
    for k in sorted(set(a) | set(b)):
        out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
    return out


def load_fewshot(
    grid_dir, grid: FewShotGrid | None = None, metric: str | None = None, n_train: int | None = None
) -> FewShotResult:
    """The table of a grid directory (every cell with a ``results.json``); writes
    ``fewshot.csv`` (and ``fewshot.parquet`` when pyarrow is installed)."""
    import pandas as pd

    grid_dir = Path(grid_dir)
    if n_train is None and (grid_dir / "grid.json").is_file():
        n_train = json.loads((grid_dir / "grid.json").read_text()).get("n_train")
    rows = []
    names = (
        [c[0] for c in grid_cells(grid)]
        if grid is not None
        else sorted(p.name for p in (grid_dir / "runs").glob("*") if (p / "cell.json").is_file())
    )
    for name in names:
        run_dir = grid_dir / "runs" / name
        plan_path, res_path = run_dir / "cell.json", run_dir / "results.json"
        if not plan_path.is_file() or not res_path.is_file():
            continue
        plan = json.loads(plan_path.read_text())
        doc = json.loads(res_path.read_text())
        task, data = plan["task"], plan["data"]
        n = data.get("few_shot_n")
        rows.append(
            {
                "cell": name,
                "n": n if n is not None else n_train,
                "size": str(n) if n is not None else "all",
                "init": "pretrained" if task.get("init_from") else "scratch",
                "mode": _mode_label(task["mode"], task.get("unfreeze_fraction") or 0.0),
                "seed": plan["seed"],
                "status": doc.get("status"),
                "error": doc.get("error"),
                "seconds": (doc.get("timings") or {}).get("total_s"),
                "run_dir": str(run_dir),
                **(doc.get("metrics") or {}),
            }
        )
    table = pd.DataFrame(rows)
    if metric is None and not table.empty:
        metric = "test/auroc" if "test/auroc" in table else "test/r2" if "test/r2" in table else ""
    table_path = grid_dir / TABLE
    if rows:
        table.to_csv(table_path, index=False)
        try:
            table.to_parquet(grid_dir / "fewshot.parquet", index=False)
        except ImportError:  # pragma: no cover - pyarrow is optional
            pass
    return FewShotResult(grid_dir, table, metric or "", table_path=table_path if rows else None)


def paired_comparison(
    table, metric: str, a: str = "pretrained", b: str = "scratch", by: str | None = "mode"
):
    """Pretrained vs scratch on the same subsets and seeds: one row per group of ``by``
    (``"mode"``, ``"n"``, or None for everything) with the number of pairs, the means,
    the mean difference ``a - b`` with its 95 % t interval and the paired effect size
    (Cohen's d_z: mean difference / SD of the differences), the Wilcoxon signed-rank test and
    the paired t test (two-sided). Pairs are cells equal in size, mode and seed with both
    inits ``ok``."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    cols = [
        "group",
        "n_pairs",
        f"mean_{a}",
        f"mean_{b}",
        "mean_diff",
        "diff_ci_low",
        "diff_ci_high",
        "effect_dz",
        "wilcoxon_stat",
        "wilcoxon_p",
        "t_stat",
        "t_p",
    ]
    if table is None or len(table) == 0 or metric not in table:
        return pd.DataFrame(columns=cols)
    ok = table[(table["status"] == "ok") & table[metric].notna()]
    wide = ok.pivot_table(
        index=["size", "mode", "seed"], columns="init", values=metric, aggfunc="first"
    )
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=cols)
    wide = wide[[a, b]].dropna().reset_index()
    wide["n"] = wide["size"].map(ok.groupby("size")["n"].first())
    if by is not None and by not in ("mode", "size", "n", "seed"):
        raise ValueError(f"by={by!r}: expected 'mode', 'n', 'size', 'seed' or None")
    groups = (
        [("all", wide)]
        if by is None
        else [
            (str(int(k)) if isinstance(k, float) and k == k and k.is_integer() else str(k), g)
            for k, g in wide.groupby(by, sort=False, dropna=False)
        ]
    )
    if by is not None and len(groups) > 1:
        groups.append(("all", wide))
    rows = []
    for key, g in groups:
        x, y = g[a].to_numpy(float), g[b].to_numpy(float)
        d = x - y
        w_stat = w_p = t_stat = t_p = lo = hi = dz = math.nan
        if len(d) >= 1 and np.any(d != 0):
            w = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
            w_stat, w_p = float(w.statistic), float(w.pvalue)
        elif len(d) >= 1:
            w_p = 1.0
        if len(d) >= 2 and np.std(d) > 0:
            t = stats.ttest_rel(x, y)
            t_stat, t_p = float(t.statistic), float(t.pvalue)
            lo, hi = (float(v) for v in t.confidence_interval(0.95))
            dz = float(np.mean(d) / np.std(d, ddof=1))
        rows.append(
            [
                key,
                len(d),
                float(np.mean(x)) if len(d) else math.nan,
                float(np.mean(y)) if len(d) else math.nan,
                float(np.mean(d)) if len(d) else math.nan,
                lo,
                hi,
                dz,
                w_stat,
                w_p,
                t_stat,
                t_p,
            ]
        )
    return pd.DataFrame(rows, columns=cols)


def _write_results(
    res: FewShotResult, grid: FewShotGrid, pretrained: str | None, base: dict
) -> Path:
    from swiftlib.results import save_results

    paired = res.paired(by=None)
    return save_results(
        res.grid_dir,
        "fewshot",
        metrics=res.metrics,
        parameters={
            "grid": grid.to_dict(),
            "pretrained": pretrained,
            "metric": res.metric,
            "base": base,
        },
        artifacts={"table": res.table_path, "runs": res.grid_dir / "runs"},
        timings={
            "cells_s": float(sum(x for x in res.table.get("seconds", []) if x == x))
            if len(res.table)
            else 0.0
        },
        extra={
            "paired": paired.to_dict(orient="records"),
            "failed": res.failed,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
