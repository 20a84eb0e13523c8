"""Evaluate a fine-tuned checkpoint on a split: per-subject predictions and metrics, and a
breakdown by site (or any subject column).

The checkpoint carries everything needed: the task config (model, label, regression
scaler, input contract) and the data config it was trained with (store, split file,
window length). The same split file is reused, so ``split="test"`` scores exactly the
subjects the run held out.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "EvalResult",
    "evaluate_checkpoint",
    "metrics_by_group",
    "fit_split_baselines",
    "compare_with_baselines",
    "describe_evaluation",
]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict  # "<split>/<name>" -> float
    predictions: object  # pandas DataFrame, one row per subject (+ the store's subject columns)
    config: object  # FinetuneConfig
    data: object  # DataConfig used
    split: str
    # subject ids of the first store: "train" (what the model was fitted on, few-shot
    # subset included), "val" (chose its checkpoint) and "test"
    subjects: dict = dataclasses.field(default_factory=dict)


def evaluate_checkpoint(
    checkpoint,
    split: str = "test",
    store_path: str | None = None,
    splits_dir: str | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    accelerator: str = "cpu",
    precision: str = "32-true",
    progress: bool = False,
) -> EvalResult:
    """Score ``checkpoint`` (a fine-tuning ``.ckpt``) on ``split`` (``"val"`` or ``"test"``).

    ``store_path``/``splits_dir`` override where the data and split files are (e.g. the run
    moved); the store must satisfy the checkpoint's normalisation contract.
    """
    import lightning.pytorch as pl
    import torch

    from swiftlib.data.datamodule import DataConfig, FMRIDataModule
    from swiftlib.tasks.common import (
        CHECKPOINT_KEY,
        CheckpointError,
        check_contract,
        read_checkpoint,
    )
    from swiftlib.tasks.finetune import FinetuneConfig, FinetuneTask

    if split not in ("val", "test"):
        raise ValueError(f"split={split!r}: expected 'val' or 'test'")
    ckpt = read_checkpoint(checkpoint)
    meta = ckpt.get(CHECKPOINT_KEY) or {}
    if meta.get("kind") != "finetune" or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{checkpoint}: a {meta.get('kind', 'non-swiftlib')} checkpoint; expected a "
            "fine-tuning checkpoint (checkpoints/best.ckpt of a fine-tuning run)"
        )
    cfg = FinetuneConfig.from_dict({**ckpt["hyper_parameters"]["config"], "init_from": None})
    data = dict((ckpt.get("datamodule_hyper_parameters") or {}).get("data") or {})
    if not data:
        raise CheckpointError(
            f"{checkpoint}: has no data configuration; pass store_path and splits_dir"
        )
    per_device = DataConfig.from_dict(data).per_device_batch_size
    data.update(
        num_devices=1,
        accumulate_grad_batches=1,
        num_workers=num_workers,
        batch_size=batch_size or per_device,
        eval_batch_size=batch_size or per_device,
    )
    if store_path:
        data["store_path"] = store_path
    if splits_dir:
        data["splits_dir"] = splits_dir
    dcfg = DataConfig.from_dict(data)
    dm = FMRIDataModule(dcfg)
    dm.setup("test")
    check_contract(
        cfg.contract,
        dm.contract(),
        what=f"store {dcfg.store_path}",
        template_mismatch=cfg.template_mismatch,
    )
    task = FinetuneTask(cfg)
    missing, unexpected = task.load_state_dict(ckpt["state_dict"], strict=False)
    if unexpected or [k for k in missing if not k.endswith("relative_position_index")]:
        raise CheckpointError(
            f"{checkpoint}: weights do not fit {cfg.model!r} (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
    )
    with torch.inference_mode():
        if split == "test":
            out = trainer.test(task, dataloaders=dm.test_dataloader(), verbose=False)
        else:
            out = trainer.validate(task, dataloaders=dm.val_dataloader(), verbose=False)
    metrics = {k: float(v) for k, v in out[0].items() if k.startswith(f"{split}/")}
    preds = task.predictions[split]
    subjects = dm.stores[0].subjects
    extra = [c for c in subjects.columns if c not in preds.columns]
    preds = preds.merge(subjects[extra], left_on="subject_id", right_index=True, how="left")
    from swiftlib.data.splits import few_shot_subset, subjects_of

    store = dm.stores[0]
    splits = dm.splits[str(dcfg.store_paths[0])]
    train = splits.train
    if dcfg.few_shot_n is not None:
        train = few_shot_subset(splits.train, dcfg.few_shot_n, dcfg.few_shot_seed)
    subject_ids = {
        "train": subjects_of(store, train),
        "val": subjects_of(store, splits.val),
        "test": subjects_of(store, splits.test),
    }
    log.info(
        "evaluated %s on %s: %s",
        Path(checkpoint).name,
        split,
        {k: round(v, 4) for k, v in metrics.items()},
    )
    return EvalResult(metrics, preds, cfg, dataclasses.replace(dcfg), split, subject_ids)


def metrics_by_group(result: EvalResult, by: str = "site"):
    """Per-subject metrics within each value of column ``by`` (a DataFrame, one row per
    group; AUROC is NaN where a group holds one class only)."""
    import pandas as pd

    from swiftlib.tasks.finetune import subject_metrics

    df = result.predictions
    if by not in df.columns:
        raise KeyError(f"column {by!r} not in the predictions; available: {sorted(df.columns)}")
    rows = [
        {by: key, **subject_metrics(group, result.config)}
        for key, group in df.groupby(by, sort=True)
    ]
    table = pd.DataFrame(rows).set_index(by)
    table["num_subjects"] = table["num_subjects"].astype(int)
    return table


def fit_split_baselines(result: EvalResult, **kwargs):
    """:func:`~swiftlib.training.baselines.fit_baselines` on the evaluation's own split: the
    baselines learn from every labelled subject the model's run used (its training subjects,
    and for a test evaluation its validation subjects, which chose the checkpoint) and are
    scored on the subjects just evaluated. Keywords go to ``fit_baselines`` (``atlas_img``,
    ``num_parcels``, ``baselines``, ``seed``…). The first store of the run is used."""
    from swiftlib.training.baselines import fit_baselines

    if not result.subjects:
        raise ValueError("the evaluation result carries no split subjects (evaluate again)")
    train = list(result.subjects["train"])
    if result.split == "test":
        train += list(result.subjects["val"])
    tested = [str(s) for s in result.predictions["subject_id"]]
    return fit_baselines(result.data.store_paths[0], train, tested, result.config.label, **kwargs)


def _model_scores(result: EvalResult):
    """Per-subject model output aligned to ``subject_id``: class-1 probability, the class
    probabilities (multi-class) or the prediction."""
    df = result.predictions.set_index("subject_id")
    if result.config.task == "regression":
        return df["pred"].astype(float)
    cols = [c for c in df.columns if c[:1] == "p" and c[1:].isdigit()]
    return df["p1"].astype(float) if len(cols) == 2 else df[cols]


def _metric(y, score, classification: bool) -> float:
    from sklearn.metrics import r2_score, roc_auc_score

    y, score = np.asarray(y), np.asarray(score)
    if classification:
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(
            roc_auc_score(y, score, multi_class="ovr")
            if score.ndim == 2
            else roc_auc_score(y, score)
        )
    return float(r2_score(y, score)) if len(y) > 1 and np.var(y) > 0 else float("nan")


def compare_with_baselines(result: EvalResult, baselines, num_bootstrap: int = 1000, seed=0):
    """The model against each baseline on the same test subjects: one row per baseline —
    ``baseline, metric, model, score, difference, ci_low, ci_high, verdict`` — with a 95 %
    paired bootstrap interval of the difference (subjects resampled with replacement).
    ``verdict``: ``beats`` (interval above 0), ``loses`` (below 0) or ``tie`` (it holds 0:
    these test subjects cannot tell the two apart)."""
    import pandas as pd

    classification = result.config.task == "classification"
    model = _model_scores(result)
    y_by_id = result.predictions.set_index("subject_id")["target"]
    rng = np.random.default_rng(seed)
    rows = []
    for name, d in baselines.predictions.groupby("baseline", sort=False):
        ids = [s for s in d["subject_id"] if s in model.index]
        y = y_by_id.loc[ids].to_numpy()
        m = model.loc[ids].to_numpy()
        b = d.set_index("subject_id").loc[ids, "score"].to_numpy()
        diffs = []
        for _ in range(num_bootstrap):
            k = rng.integers(0, len(ids), len(ids))
            dm_, db = _metric(y[k], m[k], classification), _metric(y[k], b[k], classification)
            if np.isfinite(dm_) and np.isfinite(db):
                diffs.append(dm_ - db)
        lo, hi = np.percentile(diffs, [2.5, 97.5]) if diffs else (np.nan, np.nan)
        score_m, score_b = _metric(y, m, classification), _metric(y, b, classification)
        verdict = "beats" if lo > 0 else "loses" if hi < 0 else "tie"
        rows.append(
            {
                "baseline": name,
                "metric": baselines.metric,
                "model": score_m,
                "score": score_b,
                "difference": score_m - score_b,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "verdict": verdict if diffs else "undefined",
            }
        )
    return pd.DataFrame(rows)


def _chance_p_value(result: EvalResult) -> float:
    """One-sided p-value of "better than chance": Mann–Whitney U of the class-1 probability
    (binary) or Pearson r > 0 (regression); NaN otherwise."""
    from scipy import stats

    df = result.predictions
    if result.config.task == "regression":
        if len(df) < 3 or df["pred"].std() == 0:
            return float("nan")
        return float(stats.pearsonr(df["pred"], df["target"], alternative="greater").pvalue)
    if "p1" not in df or df["target"].nunique() != 2 or result.config.num_classes != 2:
        return float("nan")
    pos, neg = df.loc[df["target"] == 1, "p1"], df.loc[df["target"] == 0, "p1"]
    return float(stats.mannwhitneyu(pos, neg, alternative="greater").pvalue)


_MECHANISM = {
    "connectivity": "a coupling between two regions' time series",
    "amplitude": "the fluctuation amplitude of one region",
}


def describe_evaluation(result: EvalResult, comparison=None) -> str:
    """What the evaluation means, in sentences a newcomer understands: the metric against
    chance (and a one-sided test), against the synthetic cohort's planted truth when the
    store has one, against the baselines (``comparison`` from :func:`compare_with_baselines`)
    and, when the result is poor, the likely reasons."""
    from swiftlib.viz.text import format_p_value, format_score

    cfg, df = result.config, result.predictions
    n, split = len(df), result.split
    classification = cfg.task == "classification"
    name, chance = ("AUROC", 0.5) if classification else ("R²", 0.0)
    value = result.metrics.get(f"{split}/{'auroc' if classification else 'r2'}", float("nan"))
    p = _chance_p_value(result)
    unseen = "unseen " if split == "test" else ""
    out = []
    if not np.isfinite(value):
        out.append(
            f"{name} is undefined on these {n} {split} subjects (a single class or a constant "
            "target): evaluate on more subjects."
        )
    else:
        good = value >= (0.75 if classification else 0.3) and (not np.isfinite(p) or p < 0.05)
        above = np.isfinite(p) and p < 0.05
        what = (
            "the model separates the classes well"
            if good
            else "better than chance, but weak"
            if above
            else "no better than chance"
        )
        out.append(
            f"{name} {format_score(value)} on {n} {unseen}{split} subjects (chance {chance:g}; "
            f"one-sided test against chance {format_p_value(p)}): {what}."
        )
        truth = _planted(result)
        if truth is not None:
            if truth.get("mechanism") == "none":
                out.append(
                    f"`{cfg.label}` is independent of the data by construction, so chance is "
                    "the correct result; a clearly better score would mean leakage or luck."
                )
            else:
                mech = _MECHANISM.get(truth.get("mechanism"), truth.get("mechanism", "a signal"))
                found = "the model found it" if good else "the model has not found it"
                out.append(
                    f"`{cfg.label}` is planted as {mech} "
                    f"({', '.join(truth.get('regions', []))}): {found}."
                )
        if not good and (truth is None or truth.get("mechanism") != "none"):
            out.extend(_why_poor(result, n))
    if comparison is not None and len(comparison):
        out.append(_baseline_sentence(comparison, name, n))
    return " ".join(out)


def _planted(result: EvalResult):
    from swiftlib.utils.io import read_json

    gt = Path(result.data.store_paths[0]) / "ground_truth" / "ground_truth.json"
    if not gt.is_file():
        return None
    return read_json(gt).get("labels", {}).get(result.config.label)


def _why_poor(result: EvalResult, n: int) -> list[str]:
    df, reasons = result.predictions, []
    col = "p1" if result.config.task == "classification" and "p1" in df else "pred"
    spread = float(df[col].std()) if col in df and len(df) > 1 else float("nan")
    scale = 1.0 if col == "p1" else float(df["target"].std() or 1.0)
    if np.isfinite(spread) and spread < 1e-3 * scale:
        reasons.append(
            f"The model gives every subject nearly the same output ({col} "
            f"{df[col].mean():.3f} ± {spread:.1g}): it collapsed to a constant, typical of too "
            "few optimiser steps, a learning rate too low or too high, or an input "
            "normalisation that hides the signal (see the recipe in docs/notebooks.md)."
        )
    if n < 20:
        reasons.append(
            f"With {n} test subjects the score is very uncertain: one subject more or less "
            "right moves it a lot."
        )
    if not reasons:
        reasons.append(
            "Likely causes: too few training subjects or steps for this label, or a signal "
            "the encoder's input window does not carry; compare with the baselines below."
        )
    return reasons


def _baseline_sentence(comparison, name: str, n: int) -> str:
    from swiftlib.viz.text import format_score

    best = comparison.sort_values("score", ascending=False).iloc[0]
    label = best["baseline"].replace("_", " ")
    verb = {
        "beats": "beats",
        "loses": "does not beat",
        "tie": "does not beat",
        "undefined": "cannot be compared with",
    }[best["verdict"]]
    text = (
        f"The transformer {verb} the {label} baseline ({name} {format_score(best['model'])} vs "
        f"{format_score(best['score'])}"
    )
    if best["verdict"] in ("beats", "loses", "tie") and np.isfinite(best["ci_low"]):
        text += (
            f"; difference {best['difference']:+.2f}, 95 % bootstrap interval "
            f"{best['ci_low']:+.2f} to {best['ci_high']:+.2f} over {n} test subjects"
        )
    text += ")"
    if best["verdict"] == "loses":
        text += ": simple features carry the label better than the transformer has learned it."
    elif best["verdict"] == "tie":
        text += ": these test subjects cannot tell the two apart."
    else:
        text += "."
    return text
