"""``swiftlib demo``: the whole pipeline on the synthetic cohort, headless, through the notebooks.

Each stage is one notebook run with ``swiftlib run`` (:func:`swiftlib.runner.run_notebook`)
with the CPU demo preset (``notebooks/params/cpu_demo.yaml``) and the demo's paths; the
stages chain through those paths (the store made first feeds every training stage, the
pretrained checkpoint feeds the tuning study and the few-shot curves, the fine-tuned
checkpoint feeds evaluation and the interpretation stages). Layout::

    data/demo/store_synthetic/        the cohort (+ ground_truth/)
    data/demo/synthetic_bids/         a NIfTI export of a few subjects
    data/demo/store_from_nifti/       that export preprocessed (must equal the cohort bit for bit)
    data/demo/splits/                 the subject-level split every stage reuses
    papermill_runs/demo/<stage>/      executed notebook, HTML, results.json (+ checkpoints/, …)

The tuned and few-shot stages (a small Optuna study and pretrained-vs-scratch curves) read
the pretrained checkpoint and feed nothing later; ``swiftlib demo --skip tune fewshot``
leaves them out (:data:`SKIPPABLE`). The interpretation stages end the demo.

Each stage that can find the planted signal says whether it did, against the thresholds of
issue 15 (:data:`THRESHOLDS`): the fine-tuned and evaluated model test AUROC ≥ 0.9 on ≥ 20
held-out subjects, the pretrained encoder ahead of scratch at the few-shot curves' smallest
size, the embedding probe above chance, and the attribution map recovering the planted
region (voxel AUROC ≥ 0.8) while the randomised model's does not (≤ 0.6). The summary
table prints the verdict beside the numbers (:func:`format_summary`).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DemoStage",
    "Stage",
    "STAGES",
    "SKIPPABLE",
    "THRESHOLDS",
    "DemoError",
    "run_demo",
    "format_summary",
    "verdict",
    "explain",
]

log = logging.getLogger(__name__)

PARAMS_FILE = "notebooks/params/cpu_demo.yaml"

#: What "found the planted signal" means per kind of stage (issue 15, item 1).
THRESHOLDS = {
    "coupling_gap": 0.5,  # explore: raw sex-1 minus sex-0 motor coupling
    "auroc": 0.9,  # fine-tune / evaluate / tune: subject-level test AUROC
    "min_test_subjects": 20,  # ... on at least this many held-out subjects
    "fewshot_gain": 0.0,  # pretrained minus scratch at the smallest size (mean over seeds)
    "probe_auroc": 0.7,  # embeddings: linear probe of the label (cross-validated)
    "map_auroc": 0.8,  # attribution: voxel AUROC of the planted region, trained model
    "random_map_auroc": 0.6,  # ... and at most this for the randomised model
}


def _num(metrics: dict, key: str) -> float:
    v = metrics.get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _explore_verdict(m: dict) -> tuple[bool, str]:
    c0, c1 = _num(m, "data/coupling_sex0"), _num(m, "data/coupling_sex1")
    ok = c1 - c0 >= THRESHOLDS["coupling_gap"]
    return ok, f"motor coupling {c1:.2f} (sex 1) vs {c0:.2f} (sex 0) in the raw data"


def _pretrain_verdict(m: dict) -> tuple[None, str]:
    # SimMIM sees no label: it is not asked to find the planted signal; its number says
    # how much of the masked input it could predict (little, on percent-signal-change input,
    # where most voxels are noise)
    r = _num(m, "val/recon_ratio")
    return None, f"masked-patch error {r:.3f}x the mean predictor's (no label used)"


def _auroc_verdict(m: dict) -> tuple[bool, str]:
    a, n = _num(m, "test/auroc"), _num(m, "test/num_subjects")
    ok = a >= THRESHOLDS["auroc"] and n >= THRESHOLDS["min_test_subjects"]
    n_text = "?" if n != n else f"{n:.0f}"
    return ok, f"test AUROC {a:.2f} on {n_text} unseen subjects (chance 0.5, target ≥ 0.9)"


def _fewshot_verdict(m: dict) -> tuple[bool, str]:
    n, d = _num(m, "fewshot/smallest_n"), _num(m, "fewshot/smallest_mean_diff")
    p, k = _num(m, "fewshot/smallest_wilcoxon_p"), _num(m, "fewshot/smallest_num_pairs")
    ok = d > THRESHOLDS["fewshot_gain"]
    n_text = "?" if n != n else f"{n:.0f}"
    k_text = "?" if k != k else f"{k:.0f}"
    return ok, (
        f"at {n_text} training subjects pretrained - scratch = {d:+.2f} AUROC "
        f"(Wilcoxon p = {p:.2g}, {k_text} pairs)"
    )


def _embed_verdict(m: dict) -> tuple[bool, str]:
    a = _num(m, "all/sex_linear_auroc")
    site, chance = _num(m, "all/site_balanced_acc"), _num(m, "all/site_chance")
    ok = a >= THRESHOLDS["probe_auroc"]
    return ok, f"sex probe AUROC {a:.2f}; site read out at {site:.2f} (chance {chance:.2f})"


def _attribute_verdict(m: dict) -> tuple[bool, str]:
    t, r = _num(m, "test/trained_auroc"), _num(m, "test/randomised_auroc")
    ok = t >= THRESHOLDS["map_auroc"] and r <= THRESHOLDS["random_map_auroc"]
    return ok, f"planted-region voxel AUROC {t:.2f} (randomised model {r:.2f})"


def verdict(run: str, metrics: dict) -> tuple[bool | None, str]:
    """Whether the stage whose run folder is ``run`` found the planted signal, and the
    sentence that says so; ``(None, "")`` for stages that do not look for it."""
    rule = _VERDICTS.get(run)
    return (None, "") if rule is None else rule(metrics)


_VERDICTS: dict[str, Callable[[dict], tuple[bool | None, str]]] = {
    "explore": _explore_verdict,
    "pretrain": _pretrain_verdict,
    "finetune": _auroc_verdict,
    "evaluate": _auroc_verdict,
    "tune": _auroc_verdict,
    "fewshot": _fewshot_verdict,
    "embed": _embed_verdict,
    "attribute": _attribute_verdict,
}


@dataclass(frozen=True)
class Stage:
    """One demo stage: a notebook, its run folder under the runs dir, parameter values
    (``{data}``, ``{runs}``, ``{subjects}``, ``{seed}`` are filled in), the metrics shown in the
    summary, and metric values the demo requires (a check, not just a number)."""

    name: str
    notebook: str
    run: str
    params: dict = field(default_factory=dict)
    show: tuple[str, ...] = ()
    require: dict = field(default_factory=dict)
    fresh: bool = False  # empty the stage's run folder first (else a study or grid resumes)


_NB = "notebooks"
STAGES: list[Stage] = [
    Stage(
        "synthesise cohort",
        f"{_NB}/01_data/01_make_synthetic_cohort.ipynb",
        "make_cohort",
        {
            "out_dir": "{data}/store_synthetic",
            "overwrite": True,  # the demo's own cohort: a new recipe makes it again
            "export_nifti_dir": "{data}/synthetic_bids",
            "num_subjects": "{subjects}",
            "seed": "{seed}",
        },
        ("data/num_subjects", "data/size_mb"),
    ),
    Stage(
        "preprocess NIfTI export",
        f"{_NB}/01_data/02_preprocess_nifti.ipynb",
        "preprocess",
        {
            "input_path": "{data}/synthetic_bids",
            "out_dir": "{data}/store_from_nifti",
            "overwrite": True,  # the demo's own store: a new recipe replaces an old one
            "phenotype": "{data}/synthetic_bids/participants.tsv",
            "compare_to_store": "{data}/store_synthetic",
            # the cohort's own settings, so the round trip can reproduce it bit for bit
            "voxel_size": "{voxel_size}",
            "grid": "{grid}",
            "normalisation": "{normalisation}",
        },
        ("data/written", "data/failed", "data/identical_to_reference"),
        {"data/identical_to_reference": 1.0},
    ),
    Stage(
        "explore cohort",
        f"{_NB}/01_data/03_explore_cohort.ipynb",
        "explore",
        {"store_path": "{data}/store_synthetic"},
        ("data/coupling_sex0", "data/coupling_sex1"),
    ),
    Stage(
        "pretrain (SimMIM)",
        f"{_NB}/02_pretrain/01_pretrain_simmim.ipynb",
        "pretrain",
        {"store_path": "{data}/store_synthetic", "splits_dir": "{data}/splits", "seed": "{seed}"},
        ("val/recon_loss", "val/recon_ratio"),
    ),
    Stage(
        "fine-tune (sex)",
        f"{_NB}/03_downstream/01_finetune.ipynb",
        "finetune",
        # from random initialisation (the notebook's default): on this cohort and budget the
        # SimMIM encoder is a slower start (docs/notebooks.md, "The demo recipe")
        {"store_path": "{data}/store_synthetic", "splits_dir": "{data}/splits", "seed": "{seed}"},
        ("val/auroc", "test/auroc", "test/num_subjects"),
    ),
    Stage(
        "evaluate (test split)",
        f"{_NB}/03_downstream/02_evaluate.ipynb",
        "evaluate",
        {"checkpoint": "{runs}/finetune/checkpoints/best.ckpt"},
        ("test/auroc", "test/acc", "test/num_subjects"),
    ),
    Stage(
        "tune (Optuna, sex)",
        f"{_NB}/03_downstream/03_tune_optuna.ipynb",
        "tune",
        {
            "store_path": "{data}/store_synthetic",
            "splits_dir": "{data}/splits",
            "seed": "{seed}",
            "init_from": "{runs}/pretrain/checkpoints/best.ckpt",
        },
        ("tune/num_complete", "tune/num_pruned", "val/auroc", "test/auroc"),
        fresh=True,
    ),
    Stage(
        "few-shot curves (sex)",
        f"{_NB}/03_downstream/04_fewshot_curves.ipynb",
        "fewshot",
        {
            "store_path": "{data}/store_synthetic",
            "splits_dir": "{data}/splits",
            "pretrained": "{runs}/pretrain/checkpoints/best.ckpt",
        },
        ("fewshot/smallest_n", "fewshot/smallest_mean_diff", "fewshot/smallest_wilcoxon_p"),
        fresh=True,
    ),
    Stage(
        "explore embeddings",
        f"{_NB}/04_interpret/01_explore_embeddings.ipynb",
        "embed",
        {
            "checkpoint": "{runs}/finetune/checkpoints/best.ckpt",
            "store_path": "{data}/store_synthetic",
            "site_permutations": 20,
            "cv_folds": 3,
        },
        ("all/sex_linear_auroc", "all/site_balanced_acc", "all/site_chance"),
    ),
    Stage(
        "brain attributions",
        f"{_NB}/04_interpret/02_brain_attributions.ipynb",
        "attribute",
        {
            "checkpoint": "{runs}/finetune/checkpoints/best.ckpt",
            "store_path": "{data}/store_synthetic",
            "num_subjects": 2,
            # |gradient| averaged over noisy copies: on the demo model 0.99 for the planted
            # region vs 0.54 randomised; signed IG cancels for a connectivity effect
            "method": "smoothgrad",
            "aggregate": "abs",
        },
        ("test/trained_auroc", "test/randomised_auroc"),
    ),
]

#: Stages ``swiftlib demo --skip`` may leave out (nothing later reads their outputs).
SKIPPABLE: tuple[str, ...] = ("tune", "fewshot")


class DemoError(RuntimeError):
    """A stage failed; ``stages`` holds the summary rows so far (the failed one last)."""

    def __init__(self, message: str, stages: list):
        super().__init__(message)
        self.stages = stages


@dataclass
class DemoStage:
    name: str
    seconds: float
    metrics: dict = field(default_factory=dict)
    path: str = ""
    status: str = "ok"
    found: bool | None = None  # found the planted signal (None: the stage does not look)
    verdict: str = ""


def _fill(value, ctx: dict):
    if not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\{(\w+)\}", value)
    if whole and whole.group(1) in ctx:
        return ctx[whole.group(1)]  # keep the type (an int stays an int)
    return value.format(**ctx)


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if not v.is_integer() else str(int(v))
    return str(v)


def _cohort_settings(root: Path, params_file) -> dict:
    """The demo cohort's voxel size, grid and normalisation: the synthetic-cohort notebook's
    defaults under the params file's ``01_make_synthetic_cohort`` section."""
    import yaml

    from swiftlib.data.synthetic import default_grid
    from swiftlib.runner import notebook_parameters

    values = {k: p.default for k, p in notebook_parameters(root / STAGES[0].notebook).items()}
    if params_file is not None and Path(params_file).is_file():
        doc = yaml.safe_load(Path(params_file).read_text()) or {}
        values.update(doc.get(Path(STAGES[0].notebook).stem) or {})
    voxel_size = float(values["voxel_size"])
    return {
        "voxel_size": voxel_size,
        "grid": list(default_grid(voxel_size)),
        "normalisation": str(values["normalisation"]),
    }


def run_demo(
    out_dir="data/demo",
    runs_dir="papermill_runs/demo",
    num_subjects: int | None = None,
    seed: int = 0,
    stages: list[Stage] | None = None,
    params_file=PARAMS_FILE,
    progress: bool = True,
    log_output: bool = False,
    on_stage=None,
    skip=(),
) -> list[DemoStage]:
    """Run ``stages`` (default :data:`STAGES`) in order, leaving out those whose run folder
    is named in ``skip`` (only :data:`SKIPPABLE` ones); returns one :class:`DemoStage` row per
    stage. ``num_subjects=None`` keeps the params file's cohort size (136 in the CPU demo: 20
    test subjects). Raises :class:`DemoError` at the first failing stage (its notebook is
    kept)."""
    unknown = [k for k in skip if k not in SKIPPABLE]
    if unknown:
        raise ValueError(f"demo stage(s) {unknown} cannot be skipped; skippable: {list(SKIPPABLE)}")
    from swiftlib.notebook import project_root
    from swiftlib.runner import run_notebook

    root = project_root()
    if not (root / "notebooks").is_dir():  # run from elsewhere: the checkout installed from
        import swiftlib

        root = Path(swiftlib.__file__).resolve().parent.parent
    pfile = root / params_file if params_file else None
    ctx = {
        "data": str(Path(out_dir)),
        "runs": str(Path(runs_dir)),
        "subjects": None if num_subjects is None else int(num_subjects),
        "seed": int(seed),
        **_cohort_settings(root, pfile),
    }
    rows: list[DemoStage] = []
    plan = [st for st in (STAGES if stages is None else stages) if st.run not in skip]
    if any(st.run == "make_cohort" for st in plan):
        # the cohort is made again (overwrite), so its split is too: a split file of an
        # earlier recipe's cohort is refused by every later stage (same cohort: same split)
        shutil.rmtree(Path(out_dir) / "splits", ignore_errors=True)
    for i, st in enumerate(plan, start=1):
        notebook = root / st.notebook
        if not notebook.is_file():
            raise FileNotFoundError(
                f"{notebook} not found; run swiftlib demo from a swiftlib "
                "checkout (the installed package has no notebooks)"
            )
        if on_stage is not None:
            on_stage(i, len(plan), st)
        log.info("demo stage %d/%d: %s (%s)", i, len(plan), st.name, st.notebook)
        if st.fresh:
            shutil.rmtree(Path(runs_dir) / st.run, ignore_errors=True)
        t0 = time.perf_counter()
        out = run_notebook(
            notebook,
            run_dir=Path(runs_dir) / st.run,
            parameters={
                k: _fill(v, ctx) for k, v in st.params.items() if _fill(v, ctx) is not None
            },
            params_file=pfile if pfile is not None and pfile.is_file() else None,
            log_output=log_output,
            progress=progress,
            overwrite=True,  # the demo reruns its own stages (a failed rerun keeps the old run)
        )
        seconds = time.perf_counter() - t0
        metrics = out.results.get("metrics", {})
        shown = {
            k.split("/", 1)[-1] if k.startswith("data/") else k: _short(metrics.get(k))
            for k in st.show
        }
        found, sentence = verdict(st.run, metrics) if out.status == "ok" else (None, "")
        row = DemoStage(
            st.name, seconds, shown, str(out.html or out.executed), out.status, found, sentence
        )
        rows.append(row)
        missing = {k: v for k, v in st.require.items() if metrics.get(k) != v}
        if out.status != "ok" or missing:
            row.status = "FAILED"
            got = {k: metrics.get(k) for k in missing}
            why = out.error if out.status != "ok" else f"required {missing}, got {got}"
            raise DemoError(f"demo stage {st.name!r} failed: {why}; see {out.executed}", rows)
    return rows


def format_summary(stages: list[DemoStage]) -> str:
    """The demo's table: per stage its time, status, whether it found the planted signal
    (``yes`` / ``NO`` / ``-`` for stages that do not look) and why, the key metrics and the
    executed notebook; then the count of stages that found it."""
    rows = [("stage", "wall s", "status", "planted signal", "key metrics", "executed notebook")]
    for st in stages:
        metrics = ", ".join(f"{k}={v}" for k, v in st.metrics.items())
        found = {None: "-", True: "yes", False: "NO"}[st.found]
        found += f": {st.verdict}" if st.verdict else ""
        rows.append((st.name, f"{st.seconds:.1f}", st.status, found, metrics, st.path))
    total = sum(st.seconds for st in stages)
    looked = [st for st in stages if st.found is not None]
    hits = sum(bool(st.found) for st in looked)
    rows.append(("total", f"{total:.1f}", "", f"found in {hits} of {len(looked)} stages", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _planted(store_path) -> dict:
    """``{label: description}`` of the labels planted in a synthetic store; ``{}`` otherwise."""
    try:
        from swiftlib.data.store import open_store

        info = open_store(store_path).manifest.get("dataset_info", {}).get("synthetic")
    except Exception:  # noqa: BLE001 - not a store we can read: no planted truth to cite
        return {}
    if not info:
        return {}
    from swiftlib.data.synthetic import LABELS

    return {k: v["description"] for k, v in LABELS.items()}


def explain(kind: str, metrics: dict, label: str = "", store_path="") -> str:
    """One or two sentences a newcomer can read at the end of a notebook: what the run's
    metrics mean against chance and, on the synthetic cohort, against the planted truth —
    including why a poor result may be poor. ``kind``: ``pretrain``, ``contrastive``,
    ``finetune``, ``tune``, ``fewshot`` or ``embed``."""
    planted = _planted(store_path) if store_path else {}
    truth = planted.get(label, "")
    m = metrics
    if kind == "pretrain":
        r = _num(m, "val/recon_ratio")
        text = (
            f"On held-out subjects the model's error on hidden patches is {r:.3f}x that of "
            "predicting each voxel's mean (1.0 = nothing learned)."
        )
        if r > 0.9:
            text += (
                " On percent-signal-change input most voxels are noise no model can predict, "
                "so a ratio near 1 is expected; under SwiFT's global z-score (anatomy visible) "
                "it falls to about 0.1. It says little about how useful the encoder is: the "
                "few-shot curves measure that."
            )
        return text
    if kind == "contrastive":
        top1, ratio = _num(m, "val/top1"), _num(m, "val/distance_ratio")
        return (
            f"A held-out window finds its own partner (another window of the same scan) as "
            f"its nearest neighbour {top1:.0%} of the time; partners are {ratio:.2f}x as far "
            "apart as other windows (1.0 = the encoder cannot tell scans apart)."
        )
    if kind in ("finetune", "tune"):
        if "test/auroc" in m:
            a, n = _num(m, "test/auroc"), _num(m, "test/num_subjects")
            head = f"Test AUROC {a:.2f} on {n:.0f} subjects the model never saw (chance 0.5)"
            if a >= THRESHOLDS["auroc"]:
                tail = f": the model found the planted signal ({truth})." if truth else "."
            elif a >= 0.7:
                tail = ": a partial signal; more subjects or steps usually help."
            else:
                tail = (
                    ": no reliable signal. With few training subjects or steps the model can "
                    "memorise subjects instead (train loss near 0, validation at chance); check "
                    "the normalisation (percent signal change for connectivity effects), window "
                    "starts at every frame and the number of optimiser steps."
                )
                if n < THRESHOLDS["min_test_subjects"]:
                    tail += f" With {n:.0f} test subjects any AUROC is noisy (SD about 0.15)."
            return head + tail
        r2 = _num(m, "test/r2")
        return f"Test R² {r2:.2f} on unseen subjects (0 = no better than predicting the mean)" + (
            f"; the planted effect: {truth}." if truth else "."
        )
    if kind == "fewshot":
        found, sentence = _fewshot_verdict(m)
        p, k = _num(m, "fewshot/smallest_wilcoxon_p"), _num(m, "fewshot/smallest_num_pairs")
        text = sentence[0].upper() + sentence[1:]
        if found and p < 0.05:
            return text + ": the pretrained encoder is ahead when labels are few."
        if found:
            floor = 2.0 / 2**k if k == k and k > 0 else float("nan")
            return text + (
                ": the pretrained encoder is ahead on average, but not significantly - with "
                f"{k:.0f} pairs the smallest possible p is {floor:.2g}; more seeds decide it."
            )
        return text + (
            ": pretraining did not help here. On this cohort SimMIM mostly learns to "
            "reconstruct voxel noise, and with a handful of subjects and seeds the "
            "comparison is noisy (see docs/training.md, Few-shot)."
        )
    if kind == "embed":
        aurocs = {
            k.split("/", 1)[-1][: -len("_linear_auroc")]: _num(m, k)
            for k in m
            if k.endswith("_linear_auroc")
        }
        site_key = next((k for k in m if k.endswith("/site_balanced_acc")), "")
        chance_key = next((k for k in m if k.endswith("/site_chance")), "")
        site, chance = _num(m, site_key), _num(m, chance_key)
        text = ""
        if aurocs:
            read = ", ".join(f"{name} at AUROC {a:.2f}" for name, a in aurocs.items())
            text = f"A linear probe reads {read} from the embeddings (chance 0.5; null_label "
            text += "should stay near it). "
        text += f"Scanner site is read out at balanced accuracy {site:.2f} (chance {chance:.2f})"
        text += (
            ": the embeddings carry site, a confound to rule out before trusting a label effect."
            if site - chance > 0.1
            else ": little site leakage."
        )
        return text
    raise ValueError(
        f"explain(kind={kind!r}): expected pretrain, contrastive, finetune, tune, fewshot or embed"
    )
