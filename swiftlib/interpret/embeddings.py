"""Embeddings of a trained encoder as a tidy table, and what they encode.

:func:`extract_embeddings` runs a checkpoint's encoder over every window of the chosen
subjects and writes one row per window (``level="window"``) or per subject (the mean of
its windows, ``level="subject"``) to parquet: ``subject_id, participant_id, dataset, site,
window_start, num_windows``, every label column of the store, then the embedding as
columns ``emb_0 … emb_{F-1}`` (and ``s{k}_0 …`` for pooled stage ``k`` outputs when
``stages`` asks for them). Subjects are processed in chunks that are written as they
finish (``<out>.parts/``), so an interrupted extraction over a large cohort resumes where
it stopped.

Diagnostics work from the cached table: cross-validated linear-probe and kNN scores per
label (:func:`probe_scores`; AUROC for classification, R² for regression) and a
site-leakage check (:func:`site_leakage`: how well the acquisition site is predictable
from the embedding, against chance). :class:`EmbeddingAdapter` is the small interface
cross-model benchmark harnesses expect: ``embed(x (B, 1, D, H, W, T)) -> (B, F)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from swiftlib.interpret._model import (
    InferenceModel,
    autocast_context,
    check_subjects,
    load_inference_model,
    resolve_device,
)

__all__ = [
    "LEVELS",
    "EmbeddingAdapter",
    "extract_embeddings",
    "load_embeddings",
    "embedding_columns",
    "embedding_matrix",
    "resolve_split",
    "split_column",
    "to_subject_level",
    "probe_scores",
    "site_leakage",
    "diagnostics_metrics",
]

log = logging.getLogger(__name__)

LEVELS = ("subject", "window")
SPLITS = ("train", "val", "test", "all")
_META_COLUMNS = ("subject_id", "participant_id", "dataset", "site", "window_start", "num_windows")


# ---------------------------------------------------------------------------------------------
# which subjects
# ---------------------------------------------------------------------------------------------

def resolve_split(store, split: str, checkpoint=None, splits_file=None) -> list[str]:
    """Store subject ids of ``split`` (``train``/``val``/``test``/``all``).

    The split file is ``splits_file`` when given, else the one the checkpoint's run used:
    ``<run>/config.yaml`` (beside ``checkpoints/``) names ``data.splits_dir`` and
    ``data.split_name``, and the file is ``<splits_dir>/<dataset>/<split_name>.json``.
    """
    from swiftlib.data.splits import subjects_of
    from swiftlib.utils.io import read_json

    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if split == "all":
        return list(store.subject_ids)
    path = Path(splits_file) if splits_file else _run_split_file(store, checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist; pass splits_file= or subjects= explicitly")
    doc = read_json(path)
    if split not in doc:
        raise ValueError(f"split file {path} has no {split!r} list; expected keys train/val/test")
    ids = subjects_of(store, doc[split])
    if not ids:
        raise ValueError(f"split {split!r} of {path} has no subject of store {store.root}; is it the same cohort?")
    return ids


def split_column(df, store, checkpoint=None, splits_file=None):
    """``df`` with a ``split`` column (train/val/test, or ``none`` for subjects in no split)."""
    out = df.copy()
    where = {}
    for name in ("train", "val", "test"):
        try:
            where.update(dict.fromkeys(resolve_split(store, name, checkpoint, splits_file), name))
        except ValueError:  # an empty split (tiny cohorts)
            continue
    out["split"] = out["subject_id"].map(where).fillna("none")
    return out


def to_subject_level(df):
    """A window-level table → one row per subject (mean embedding over its windows)."""
    if (df["window_start"] < 0).all():
        return df.copy()
    emb = [c for c in df.columns if _is_feature(c)]
    meta = [c for c in df.columns if c not in emb and c not in ("window_start", "num_windows")]
    g = df.groupby("subject_id", sort=False)
    out = g[meta].first().reset_index(drop=True)
    out["window_start"] = -1
    out["num_windows"] = g.size().to_numpy()
    out = out.join(g[emb].mean().reset_index(drop=True))
    out.attrs.update(df.attrs)
    return out


def _is_feature(col: str) -> bool:
    head, _, tail = col.partition("_")
    return tail.isdigit() and (head == "emb" or (head[:1] == "s" and head[1:].isdigit()))


def _run_split_file(store, checkpoint) -> Path:
    import yaml

    if checkpoint is None:
        raise ValueError("split= needs splits_file= or the checkpoint of a fit() run (to find its split file)")
    cfg_path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"no {cfg_path} beside checkpoint {checkpoint}, so its split is unknown; pass splits_file= "
            "(data/splits/<dataset>/<name>.json) or subjects= explicitly")
    data = (yaml.safe_load(cfg_path.read_text()) or {}).get("data", {})
    dataset = "+".join(store.datasets) or "custom"
    return Path(data.get("splits_dir", "data/splits")) / dataset / f"{data.get('split_name', 'default')}.json"


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------

def _signature(model: InferenceModel, store, params: dict) -> str:
    p = Path(model.path)
    st = p.stat()
    doc = {"checkpoint": str(p.resolve()), "size": st.st_size, "mtime": int(st.st_mtime), "store": str(store.root.resolve()),
           **params}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rows_for_chunk(model, store, sids, level, stages, sequence_length, stride, batch_size, device, precision,
                    num_workers, pbar, frame_step=1):
    """Embed every window of ``sids``; returns a DataFrame at ``level``."""
    import pandas as pd
    from torch.utils.data import DataLoader

    from swiftlib.data.windows import WindowDataset, collate_samples

    ds = WindowDataset(store, sids, sequence_length=sequence_length, stride_between_seq=stride,
                       stride_within_seq=frame_step, mode="eval")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_samples)
    ids, starts, feats, stage_feats = [], [], [], [[] for _ in stages]
    with torch.inference_mode(), autocast_context(precision, device):
        for batch in loader:
            x = batch.x.to(device)  # (B, 1, D, H, W, T)
            if stages:
                emb, pooled = model.embed_stages(x, stages)
                for k, t in enumerate(pooled):
                    stage_feats[k].append(t.float().cpu().numpy())
            else:
                emb = model.embed(x)  # (B, F)
            feats.append(emb.float().cpu().numpy())
            ids.extend(batch.subject_id)
            starts.extend(batch.window_start.tolist())
            if pbar is not None:
                pbar.update(len(batch.subject_id))
    blocks = {"emb": np.concatenate(feats)}  # (N, F)
    for k, s in zip(stages, stage_feats, strict=True):
        blocks[f"s{k}"] = np.concatenate(s)
    cols = {f"{name}_{i}": arr[:, i] for name, arr in blocks.items() for i in range(arr.shape[1])}
    df = pd.DataFrame({"subject_id": ids, "window_start": np.asarray(starts, dtype=np.int64), **cols})
    df["num_windows"] = 1
    if level == "subject":
        emb_cols = [c for c in df.columns if c not in ("subject_id", "window_start", "num_windows")]
        agg = df.groupby("subject_id", sort=False)
        df = agg[emb_cols].mean().reset_index()
        df["window_start"] = -1  # a subject row: the mean over all its windows
        df["num_windows"] = agg.size().to_numpy()
    return df


def extract_embeddings(
    checkpoint,
    store,
    split: str | None = None,
    subjects: Sequence[str] | None = None,
    level: str = "subject",
    stages: Sequence[int] = (),
    out_path=None,
    sequence_length: int | None = None,
    stride_between_seq: float = 1.0,
    stride_within_seq: int | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
    device: str = "auto",
    chunk_subjects: int = 64,
    num_workers: int = 0,
    splits_file=None,
    progress: bool = True,
):
    """Embed the windows of a store's subjects with a checkpoint's encoder.

    Args:
        checkpoint: a swiftlib fine-tuning or SimMIM checkpoint (``checkpoints/best.ckpt``).
        store: an open store or its path; must satisfy the checkpoint's contract.
        split: ``train``/``val``/``test``/``all`` (see :func:`resolve_split`), or
        subjects: explicit subject ids (exactly one of ``split`` / ``subjects``).
        level: ``"subject"`` (mean over a subject's windows) or ``"window"``.
        stages: also pool these encoder stages (``forward_intermediates`` indices).
        out_path: parquet file to write; chunks go to ``<out_path>.parts/`` and a rerun with
            the same arguments resumes. ``None``: keep in memory only.
        sequence_length: frames per window (default: as the model was trained, else its ``img_size`` T).
        stride_between_seq: window step as a fraction of the window (1.0 = back to back).
        stride_within_seq: frame step inside a window (default: as the model was trained).
        batch_size: windows per forward pass.
        precision: ``"fp32"`` or ``"bf16"`` (autocast; faster on CPUs with AVX-512 BF16 and on GPUs).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ….
        chunk_subjects: subjects per written chunk (the unit of resumption).
        num_workers: DataLoader workers.
        splits_file: split file for ``split`` (default: the checkpoint run's).
        progress: show a tqdm progress bar over windows.

    Returns:
        DataFrame (see the module docstring), also written to ``out_path``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from swiftlib.data.store import open_store
    from swiftlib.data.windows import WindowDataset

    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {LEVELS}")
    if (split is None) == (subjects is None):
        raise ValueError("give exactly one of split= ('train'|'val'|'test'|'all') or subjects= (a list of ids)")
    if batch_size < 1 or chunk_subjects < 1:
        raise ValueError(f"batch_size={batch_size}, chunk_subjects={chunk_subjects}: expected positive integers")
    store = open_store(store) if isinstance(store, (str, Path)) else store
    dev = resolve_device(device)
    autocast_context(precision, dev)  # validates precision before any work
    model = load_inference_model(checkpoint, device=dev)
    model.check_store(store)
    sids = check_subjects(store, subjects) if subjects is not None else resolve_split(store, split, checkpoint, splits_file)
    seq = int(sequence_length or _model_frames(model))
    step = int(stride_within_seq or _model_frame_step(model))
    stages = [int(s) for s in stages]
    params = {"level": level, "stages": stages, "sequence_length": seq, "stride": float(stride_between_seq),
              "precision": precision, **({"stride_within_seq": step} if step != 1 else {})}
    parts_dir, done_parts = None, []
    if out_path is not None:
        out_path = Path(out_path)
        parts_dir = out_path.with_name(out_path.name + ".parts")
        done_parts = _open_parts(parts_dir, _signature(model, store, params))
    done = set()
    for p in done_parts:
        done.update(pd.read_parquet(p, columns=["subject_id"])["subject_id"].astype(str))
    todo = [s for s in sids if s not in done]
    if done:
        log.info("resuming: %d of %d subjects already embedded in %s", len(sids) - len(todo), len(sids), parts_dir)
    total = WindowDataset(store, todo, sequence_length=seq, stride_between_seq=stride_between_seq,
                          stride_within_seq=step, mode="eval").num_windows if todo else 0
    frames = []
    with tqdm(total=total, desc="embedding", unit="window", disable=not progress) as pbar:
        for c in range(0, len(todo), chunk_subjects):
            chunk = todo[c:c + chunk_subjects]
            df = _rows_for_chunk(model, store, chunk, level, stages, seq, stride_between_seq, batch_size, dev,
                                 precision, num_workers, pbar, frame_step=step)
            if parts_dir is not None:
                from swiftlib.utils.io import atomic_path

                name = parts_dir / f"part-{_next_part(done_parts):05d}.parquet"
                with atomic_path(name, suffix=".parquet.tmp") as tmp:
                    df.to_parquet(tmp, index=False)
                done_parts.append(name)
            else:
                frames.append(df)
    if parts_dir is not None:
        frames = [pd.read_parquet(p) for p in sorted(done_parts)]
    emb = pd.concat(frames, ignore_index=True)
    emb = emb[emb["subject_id"].isin(sids)]
    table = _subject_table(store).loc[emb["subject_id"]].reset_index(drop=True)
    emb = pd.concat([table, emb.drop(columns=["subject_id"]).reset_index(drop=True)], axis=1)
    order = {s: i for i, s in enumerate(sids)}
    emb = emb.sort_values(["subject_id", "window_start"], key=lambda c: c.map(order) if c.name == "subject_id" else c)
    emb = emb.reset_index(drop=True)
    emb.attrs.update({"checkpoint": str(checkpoint), "store": str(store.root), **params,
                      "labels": json.dumps(store.labels)})
    if out_path is not None:
        from swiftlib.utils.io import atomic_path

        out_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path, suffix=".parquet.tmp") as tmp:
            emb.to_parquet(tmp, index=False)
        log.info("wrote %d %s embeddings (%d features) to %s", len(emb), level, model.num_features, out_path)
    return emb


def _next_part(parts: list[Path]) -> int:
    return 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)


def _model_frames(model: InferenceModel) -> int:
    """Frames per window the model was trained on: ``data.sequence_length`` of the
    checkpoint's data config, else of the run's ``config.yaml`` beside ``checkpoints/``,
    else the preset's ``img_size`` T."""
    seq = _trained_data(model).get("sequence_length")
    if seq:
        return int(seq)
    size = getattr(getattr(model.encoder, "cfg", None), "img_size", None)
    if not size:
        raise ValueError("cannot tell the model's window length; pass sequence_length=")
    return int(size[-1])


def _model_frame_step(model: InferenceModel) -> int:
    """The frame step inside a window the model was trained on (``data.stride_within_seq``;
    1 when unknown). A model trained on every 3rd frame sees a different time scale in
    consecutive frames, so explaining or embedding it must read windows the same way."""
    return int(_trained_data(model).get("stride_within_seq") or 1)


def _trained_data(model: InferenceModel) -> dict:
    import yaml

    if model.data:
        return model.data
    cfg_path = Path(model.path).resolve().parent.parent / "config.yaml" if model.path else None
    if cfg_path is not None and cfg_path.is_file():
        return dict((yaml.safe_load(cfg_path.read_text()) or {}).get("data") or {})
    return {}


def _open_parts(parts_dir: Path, signature: str) -> list[Path]:
    """Existing chunks of an interrupted run with the same arguments; refuses different ones."""
    sig_file = parts_dir / "signature.json"
    if parts_dir.exists() and sig_file.exists():
        have = json.loads(sig_file.read_text()).get("signature")
        if have != signature:
            raise ValueError(
                f"{parts_dir} holds chunks of an extraction with other arguments (checkpoint, store, level, stages, "
                f"sequence_length, stride or precision); delete it or choose another out_path")
        return sorted(parts_dir.glob("part-*.parquet"))
    parts_dir.mkdir(parents=True, exist_ok=True)
    sig_file.write_text(json.dumps({"signature": signature}))
    return []


def _subject_table(store):
    df = store.subjects.copy()
    front = [c for c in ("subject_id", "participant_id", "dataset", "site") if c in df.columns]
    labels = [c for c in store.labels if c in df.columns]
    df = df[front + labels]
    df.index = df["subject_id"].astype(str)
    return df


def load_embeddings(path):
    """Read an embeddings parquet written by :func:`extract_embeddings`."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"embeddings file {p} does not exist; run extract_embeddings(..., out_path={str(p)!r})")
    return pd.read_parquet(p)


def embedding_columns(df, prefix: str = "emb") -> list[str]:
    """Names of the embedding columns ``<prefix>_0 …`` in order (``prefix="s1"``: stage 1)."""
    cols = [c for c in df.columns if c.startswith(prefix + "_") and c[len(prefix) + 1:].isdigit()]
    if not cols:
        raise ValueError(f"no embedding columns '{prefix}_0', '{prefix}_1', … in the table (columns: {list(df.columns)[:12]}…)")
    return sorted(cols, key=lambda c: int(c[len(prefix) + 1:]))


def embedding_matrix(df, prefix: str = "emb") -> np.ndarray:
    """``(N, F)`` float array of the embedding columns."""
    return df[embedding_columns(df, prefix)].to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------------------------

def _cv_splitter(y, groups, classification: bool, cv: int, seed: int):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    n_groups = len(np.unique(groups))
    if classification:
        min_class = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
        k = max(2, min(cv, n_groups, min_class))
        if n_groups < len(y):
            return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed), k
        return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), k
    k = max(2, min(cv, n_groups))
    if n_groups < len(y):
        return GroupKFold(n_splits=k), k
    return KFold(n_splits=k, shuffle=True, random_state=seed), k


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
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(max(1, min(5, n_train - 1)))
    if classification:
        linear = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    else:
        linear = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        knn = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=k))
    return {"linear": linear, "knn": knn}


def probe_scores(df, labels: Sequence[str] | None = None, label_tasks: dict | None = None, cv: int = 5,
                 seed: int = 0, prefix: str = "emb"):
    """Cross-validated linear-probe and kNN scores of each label from cached embeddings.

    Folds group rows by ``participant_id`` (window-level tables never put two windows of a
    person on both sides) and are stratified for classification. Scores are computed on the
    pooled out-of-fold predictions: **AUROC** for classification (one-vs-rest when more than
    two classes; chance 0.5) and **R²** for regression (chance ≤ 0).

    Args:
        df: a table from :func:`extract_embeddings`.
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
        raise ValueError("no labels to score; pass labels= and label_tasks= ({label: 'classification'|'regression'})")
    X_all = embedding_matrix(df, prefix)
    groups_all = df["participant_id"].astype(str).to_numpy() if "participant_id" in df else df["subject_id"].to_numpy()
    rows = []
    for label in labels:
        if label not in df.columns:
            raise ValueError(f"label {label!r} is not a column of the embeddings table; columns: {list(df.columns)[:12]}…")
        if label not in tasks:
            raise ValueError(f"label {label!r}: task unknown; pass label_tasks={{{label!r}: 'classification'|'regression'}}")
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
            rows.append({"label": label, "task": tasks[label], "probe": probe,
                         "metric": "auroc" if classification else "r2", "score": _score(y, pred, classification),
                         "chance": 0.5 if classification else 0.0, "num_rows": int(len(y)), "folds": k})
    return pd.DataFrame(rows)


def site_leakage(df, column: str = "site", cv: int = 5, seed: int = 0, num_permutations: int = 50,
                 prefix: str = "emb") -> dict:
    """How well the acquisition site is predictable from the embedding, against chance.

    A cross-validated (participant-grouped, stratified) logistic regression predicts
    ``column``; its balanced accuracy is compared with chance ``1 / num_sites`` and with a
    permutation null (site labels shuffled ``num_permutations`` times). A high score means
    the embedding carries scanner/site information that a downstream model could exploit
    (harmonise, or check that label predictions are not site predictions).

    Returns:
        ``{"balanced_acc", "chance", "excess", "p_value", "num_sites", "num_rows", "null_mean"}``
        (``p_value`` None with ``num_permutations=0``; NaN scores with a single site).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if column not in df.columns:
        raise ValueError(f"site_leakage: column {column!r} is not in the table; columns: {list(df.columns)[:12]}…")
    X = embedding_matrix(df, prefix)
    y = np.unique(df[column].astype(str).to_numpy(), return_inverse=True)[1]
    num_sites = int(y.max()) + 1
    out = {"num_sites": num_sites, "num_rows": int(len(y)), "chance": 1.0 / num_sites}
    if num_sites < 2:
        log.warning("site_leakage: one site only; nothing to test")
        return {**out, "balanced_acc": float("nan"), "excess": float("nan"), "p_value": None, "null_mean": float("nan")}
    groups = df["participant_id"].astype(str).to_numpy() if "participant_id" in df else df["subject_id"].to_numpy()
    est = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))

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
    return {**out, "balanced_acc": observed, "excess": observed - out["chance"], "p_value": p,
            "null_mean": float(np.mean(null)) if null else float("nan")}


def diagnostics_metrics(probes, leakage: dict | None = None, split: str = "embed") -> dict[str, float]:
    """``results.json`` metrics (``split/name``) from :func:`probe_scores` and :func:`site_leakage`."""
    out = {f"{split}/{r.label}_{r.probe}_{r.metric}": float(r.score) for r in probes.itertuples()}
    if leakage:
        for key in ("balanced_acc", "chance", "excess", "p_value"):
            if leakage.get(key) is not None:
                out[f"{split}/site_{key}"] = float(leakage[key])
    return out


# ---------------------------------------------------------------------------------------------
# benchmark-harness adapter
# ---------------------------------------------------------------------------------------------

class EmbeddingAdapter:
    """Checkpoint → embedding function, for cross-model benchmark harnesses.

    Example::

        enc = EmbeddingAdapter.from_checkpoint("runs/ft/checkpoints/best.ckpt")
        z = enc.embed(batch)          # batch: (B, 1, D, H, W, T) torch or numpy -> (B, F) float32 torch
        enc.num_features, enc.input_shape   # F, (1, D, H, W, T) the model expects

    ``input_shape`` is the store contract's grid with the model's window length; data must be
    preprocessed like the training store (``contract``: grid, voxel size, MNI space,
    normalisation). A 5D batch ``(B, D, H, W, T)`` gets the channel axis added.
    """

    def __init__(self, model: InferenceModel, precision: str = "fp32", batch_size: int | None = None):
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.device = next(model.module.parameters()).device
        autocast_context(precision, self.device)

    @classmethod
    def from_checkpoint(cls, checkpoint, device: str = "auto", precision: str = "fp32",
                        batch_size: int | None = None) -> EmbeddingAdapter:
        return cls(load_inference_model(checkpoint, device=device), precision=precision, batch_size=batch_size)

    @property
    def num_features(self) -> int:
        return self.model.num_features

    @property
    def contract(self) -> dict | None:
        return self.model.contract

    @property
    def input_shape(self) -> tuple[int, ...]:
        grid = tuple((self.contract or {}).get("grid") or ())
        return (1, *grid, _model_frames(self.model))

    def embed(self, x) -> torch.Tensor:
        """``x (B, 1, D, H, W, T)`` (or ``(B, D, H, W, T)``) → ``(B, num_features)`` float32 on CPU."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if x.ndim == 5:
            x = x.unsqueeze(1)  # (B, D, H, W, T) -> (B, 1, D, H, W, T)
        want = self.input_shape
        if x.ndim != 6 or (len(want) == 5 and tuple(x.shape[1:5]) != want[:4]):
            raise ValueError(f"embed: input shape {tuple(x.shape)}; expected (B, {', '.join(map(str, want))}) "
                             "(B, 1, D, H, W, T) on the checkpoint's store grid")
        outs = []
        step = self.batch_size or x.shape[0]
        with torch.inference_mode(), autocast_context(self.precision, self.device):
            for i in range(0, x.shape[0], step):
                outs.append(self.model.embed(x[i:i + step].to(self.device, torch.float32)).float().cpu())
        return torch.cat(outs)

    __call__ = embed
