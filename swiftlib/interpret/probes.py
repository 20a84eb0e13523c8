"""What an embedding encodes, from a cached table: label probes and site leakage.

:func:`probe_scores` gives cross-validated linear-probe and kNN scores per label (AUROC for
classification, R² for regression); :func:`site_leakage` tells how well the acquisition
site is predictable from the embedding, against chance and a permutation null;
:func:`diagnostics_metrics` turns both into ``results.json`` metrics. Folds group rows by
participant, so a window-level table never puts two windows of a person on both sides.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np

from swiftlib.interpret.tables import embedding_matrix

__all__ = ["probe_scores", "site_leakage", "describe_site_leakage", "diagnostics_metrics"]

log = logging.getLogger(__name__)


def _cv_splitter(y, groups, classification: bool, cv: int, seed: int):
    """Participant-grouped folds, stratified for classification (the one implementation the
    baselines use too): ``groups`` is honoured, never ignored with a warning."""
    from swiftlib.training.baselines import grouped_folds

    return grouped_folds(y, groups, classification, cv, seed)


def _oof_predictions(estimator, X, y, groups, classification, cv, seed):
    from sklearn.model_selection import cross_val_predict

    splitter, k = _cv_splitter(y, groups, classification, cv, seed)
    method = "predict_proba" if classification else "predict"
    return cross_val_predict(estimator, X, y, groups=groups, cv=splitter, method=method), k


def _score(y, pred, classification: bool) -> float:
    from sklearn.metrics import r2_score, roc_auc_score

    if classification:
        if pred.shape[1] == 2:
            return float(roc_auc_score(y, pred[:, 1]))
        return float(roc_auc_score(y, pred, multi_class="ovr"))
    return float(r2_score(y, pred))


def _estimators(classification: bool, n_train: int, seed: int):
    from sklearn.linear_model import RidgeCV
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(max(1, min(5, n_train - 1)))
    if classification:
        linear = make_pipeline(StandardScaler(), _logistic(seed))
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    else:
        linear = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        knn = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=k))
    return {"linear": linear, "knn": knn}


def _logistic(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000, random_state=seed)


def _groups(df) -> np.ndarray:
    """The participant of each row (the unit folds keep together)."""
    if "participant_id" in df:
        return df["participant_id"].astype(str).to_numpy()
    return df["subject_id"].to_numpy()


def probe_scores(
    df,
    labels: Sequence[str] | None = None,
    label_tasks: dict | None = None,
    cv: int = 5,
    seed: int = 0,
    prefix: str = "emb",
):
    """Cross-validated linear-probe and kNN scores of each label from cached embeddings.

    Folds group rows by ``participant_id`` (window-level tables never put two windows of a
    person on both sides) and are stratified for classification. Scores are computed on the
    pooled out-of-fold predictions: **AUROC** for classification (one-vs-rest when more than
    two classes; chance 0.5) and **R²** for regression (chance ≤ 0).

    Args:
        df: a table from :func:`~swiftlib.interpret.extract_embeddings`.
        labels: label columns to score (default: every label in ``df.attrs['labels']``
            or, failing that, ``label_tasks``).
        label_tasks: ``{label: "classification"|"regression"}`` (default: from the table's
            attrs, i.e. the store's declarations).

    Returns:
        DataFrame with columns ``label, task, probe, metric, score, chance, num_rows, folds``.
    """
    import pandas as pd

    tasks = dict(label_tasks or {})
    if not tasks and df.attrs.get("labels"):
        tasks = {k: v["task"] for k, v in json.loads(df.attrs["labels"]).items()}
    labels = list(labels) if labels is not None else list(tasks)
    if not labels:
        raise ValueError(
            "no labels to score; pass labels= and label_tasks= "
            "({label: 'classification'|'regression'})"
        )
    X_all = embedding_matrix(df, prefix)
    groups_all = _groups(df)
    rows = []
    for label in labels:
        if label not in df.columns:
            raise ValueError(
                f"label {label!r} is not a column of the embeddings table; "
                f"columns: {list(df.columns)[:12]}…"
            )
        if label not in tasks:
            raise ValueError(
                f"label {label!r}: task unknown; pass "
                f"label_tasks={{{label!r}: 'classification'|'regression'}}"
            )
        classification = tasks[label] == "classification"
        y = df[label].to_numpy()
        keep = ~pd.isna(y)
        X, y, groups = X_all[keep], y[keep], groups_all[keep]
        y = y.astype(int) if classification else y.astype(float)
        if classification and len(np.unique(y)) < 2:
            log.warning("label %r has one class among %d rows; skipped", label, len(y))
            continue
        n_train = int(len(np.unique(groups)) * 0.8)
        for probe, est in _estimators(classification, n_train, seed).items():
            pred, k = _oof_predictions(est, X, y, groups, classification, cv, seed)
            rows.append(
                {
                    "label": label,
                    "task": tasks[label],
                    "probe": probe,
                    "metric": "auroc" if classification else "r2",
                    "score": _score(y, pred, classification),
                    "chance": 0.5 if classification else 0.0,
                    "num_rows": int(len(y)),
                    "folds": k,
                }
            )
    return pd.DataFrame(rows)


def site_leakage(
    df,
    column: str = "site",
    cv: int = 5,
    seed: int = 0,
    num_permutations: int = 50,
    prefix: str = "emb",
) -> dict:
    """How well the acquisition site is predictable from the embedding, against chance.

    A cross-validated (participant-grouped, stratified) logistic regression predicts
    ``column``; its balanced accuracy is compared with chance ``1 / num_sites`` and with a
    permutation null (site labels shuffled ``num_permutations`` times). A high score means
    the embedding carries scanner/site information that a downstream model could exploit
    (harmonise, or check that label predictions are not site predictions).

    Returns:
        ``{"balanced_acc", "chance", "excess", "p_value", "num_permutations", "num_sites",
        "num_rows", "null_mean"}`` (``p_value`` None with ``num_permutations=0``; NaN scores
        with a single site). :func:`describe_site_leakage` writes it as a sentence.
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if column not in df.columns:
        raise ValueError(
            f"site_leakage: column {column!r} is not in the table; "
            f"columns: {list(df.columns)[:12]}…"
        )
    X = embedding_matrix(df, prefix)
    y = np.unique(df[column].astype(str).to_numpy(), return_inverse=True)[1]
    num_sites = int(y.max()) + 1
    out = {
        "num_sites": num_sites,
        "num_rows": int(len(y)),
        "chance": 1.0 / num_sites,
        "num_permutations": int(num_permutations),
    }
    if num_sites < 2:
        log.warning("site_leakage: one site only; nothing to test")
        nan = float("nan")
        return {**out, "balanced_acc": nan, "excess": nan, "p_value": None, "null_mean": nan}
    groups = _groups(df)
    est = make_pipeline(StandardScaler(), _logistic(seed))

    def score(labels):
        proba, _ = _oof_predictions(est, X, labels, groups, True, cv, seed)
        return float(balanced_accuracy_score(labels, proba.argmax(1)))

    observed = score(y)
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(num_permutations):  # permute at the participant level
        uniq, inv = np.unique(groups, return_inverse=True)
        site_of = np.zeros(len(uniq), dtype=int)
        site_of[inv] = y
        null.append(score(rng.permutation(site_of)[inv]))
    p = (1 + sum(v >= observed for v in null)) / (1 + len(null)) if null else None
    return {
        **out,
        "balanced_acc": observed,
        "excess": observed - out["chance"],
        "p_value": p,
        "null_mean": float(np.mean(null)) if null else float("nan"),
    }


def describe_site_leakage(leakage: dict, alpha: float = 0.05) -> str:
    """:func:`site_leakage`'s result as one sentence with rounded numbers, e.g. "Site is
    predictable from the embedding: balanced accuracy 0.78 vs chance 0.33 (p ≤ 0.048, the
    smallest possible with 20 permutations)." """
    from swiftlib.viz.text import format_p_value, format_score

    acc, chance = leakage.get("balanced_acc"), leakage.get("chance")
    if acc is None or acc != acc:  # NaN: one site
        return "Site leakage was not tested: the table holds a single site."
    p = leakage.get("p_value")
    numbers = f"balanced accuracy {format_score(acc)} vs chance {format_score(chance)}"
    if p is None:
        return f"Site from the embedding: {numbers} (no permutation test was run)."
    p_text = format_p_value(p, leakage.get("num_permutations"))
    if p <= alpha:
        return (
            f"Site is predictable from the embedding: {numbers} ({p_text}). The representation "
            "knows the scanner; harmonise, or check that label predictions hold within sites."
        )
    return f"Site is not detectably predictable from the embedding: {numbers} ({p_text})."


def diagnostics_metrics(
    probes, leakage: dict | None = None, split: str = "embed"
) -> dict[str, float]:
    """``results.json`` metrics (``split/name``) from :func:`probe_scores` and
    :func:`site_leakage`."""
    out = {f"{split}/{r.label}_{r.probe}_{r.metric}": float(r.score) for r in probes.itertuples()}
    if leakage:
        for key in ("balanced_acc", "chance", "excess", "p_value"):
            if leakage.get(key) is not None:
                out[f"{split}/site_{key}"] = float(leakage[key])
    return out
