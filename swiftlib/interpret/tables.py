"""Reading an embeddings table (written by :func:`~swiftlib.interpret.extract_embeddings`).

One row per window (``window_start >= 0``) or per subject (``window_start == -1``, the mean
of its windows): ``subject_id, participant_id, dataset, site``, the store's label columns,
``window_start, num_windows``, then the embedding ``emb_0 … emb_{F-1}`` and pooled stage
outputs ``s{k}_0 …``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = [
    "load_embeddings",
    "embedding_columns",
    "embedding_matrix",
    "to_subject_level",
    "is_feature_column",
    "colour_columns",
]


def load_embeddings(path):
    """Read an embeddings parquet written by :func:`~swiftlib.interpret.extract_embeddings`."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"embeddings file {p} does not exist; run extract_embeddings(..., out_path={str(p)!r})"
        )
    return pd.read_parquet(p)


def is_feature_column(col: str) -> bool:
    """``emb_<i>`` or ``s<k>_<i>``: a column of the embedding or of a pooled stage."""
    head, _, tail = col.partition("_")
    return tail.isdigit() and (head == "emb" or (head[:1] == "s" and head[1:].isdigit()))


def embedding_columns(df, prefix: str = "emb") -> list[str]:
    """Names of the embedding columns ``<prefix>_0 …`` in order (``prefix="s1"``: stage 1)."""
    n = len(prefix) + 1
    cols = [c for c in df.columns if c.startswith(prefix + "_") and c[n:].isdigit()]
    if not cols:
        raise ValueError(
            f"no embedding columns '{prefix}_0', '{prefix}_1', … in the table "
            f"(columns: {list(df.columns)[:12]}…)"
        )
    return sorted(cols, key=lambda c: int(c[n:]))


def embedding_matrix(df, prefix: str = "emb") -> np.ndarray:
    """``(N, F)`` float array of the embedding columns."""
    return df[embedding_columns(df, prefix)].to_numpy(dtype=np.float64)


def to_subject_level(df):
    """A window-level table → one row per subject (mean embedding over its windows)."""
    if (df["window_start"] < 0).all():
        return df.copy()
    emb = [c for c in df.columns if is_feature_column(c)]
    meta = [c for c in df.columns if c not in emb and c not in ("window_start", "num_windows")]
    g = df.groupby("subject_id", sort=False)
    out = g[meta].first().reset_index(drop=True)
    out["window_start"] = -1
    out["num_windows"] = g.size().to_numpy()
    out = out.join(g[emb].mean().reset_index(drop=True))
    out.attrs.update(df.attrs)
    return out


def colour_columns(df) -> list[str]:
    """Columns worth colouring an embedding plot by: ``site``, ``dataset`` (when there are
    several), ``split`` (when tagged), then every label the store declares (the table's
    attrs; failing that, every non-feature column with few distinct values or numbers)."""
    out = [c for c in ("site", "dataset", "split") if c in df.columns and df[c].nunique() > 1]
    if "site" in df.columns and "site" not in out:
        out.insert(0, "site")
    if df.attrs.get("labels"):
        labels = list(json.loads(df.attrs["labels"]))
    else:
        skip = {"subject_id", "participant_id", "window_start", "num_windows", *out}
        labels = [
            c
            for c in df.columns
            if c not in skip and not is_feature_column(c) and c not in ("dataset", "split")
        ]
    return out + [c for c in labels if c in df.columns and c not in out]
