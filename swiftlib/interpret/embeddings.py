"""Embeddings of a trained encoder as a tidy table, and what they encode.

:func:`extract_embeddings` runs a checkpoint's encoder over every window of the chosen
subjects and writes one row per window (``level="window"``) or per subject (the mean of
its windows, ``level="subject"``) to parquet: ``subject_id, participant_id, dataset, site,
window_start, num_windows``, every label column of the store, then the embedding as
columns ``emb_0 … emb_{F-1}`` (and ``s{k}_0 …`` for pooled stage ``k`` outputs when
``stages`` asks for them). Subjects are processed in chunks that are written as they
finish (``<out>.parts/``), so an interrupted extraction over a large cohort resumes where
it stopped.

The table readers (:mod:`swiftlib.interpret.tables`), the subject selection
(:mod:`swiftlib.interpret.subjects`) and the diagnostics on a cached table
(:mod:`swiftlib.interpret.probes`: cross-validated linear-probe and kNN scores per label,
site leakage) are importable from here too. :class:`EmbeddingAdapter` is the small
interface cross-model benchmark harnesses expect: ``embed(x (B, 1, D, H, W, T)) -> (B, F)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from swiftlib.interpret.config import LEVELS, EmbeddingConfig
from swiftlib.interpret.inference import (
    InferenceInputs,
    InferenceModel,
    autocast_context,
    load_inference_inputs,
    load_inference_model,
    model_frames,
)
from swiftlib.interpret.probes import (
    describe_site_leakage,
    diagnostics_metrics,
    probe_scores,
    site_leakage,
)
from swiftlib.interpret.subjects import SPLITS, as_store, resolve_split, split_column
from swiftlib.interpret.tables import (
    colour_columns,
    embedding_columns,
    embedding_matrix,
    load_embeddings,
    to_subject_level,
)

__all__ = [
    "LEVELS",
    "SPLITS",
    "EmbeddingConfig",
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
    "describe_site_leakage",
    "diagnostics_metrics",
    "colour_columns",
]

log = logging.getLogger(__name__)

_OWN_KEYWORDS = ("split", "subjects", "out_path", "splits_file", "config")


def extract_embeddings(
    checkpoint,
    store,
    split: str | None = None,
    subjects: Sequence[str] | None = None,
    *,
    out_path=None,
    splits_file=None,
    config: EmbeddingConfig | None = None,
    **options,
):
    """Embed the windows of a store's subjects with a checkpoint's encoder.

    Args:
        checkpoint: a swiftlib fine-tuning or SimMIM checkpoint (``checkpoints/best.ckpt``,
            a file or a DeepSpeed folder).
        store: an open store or its path; must satisfy the checkpoint's contract.
        split: ``train``/``val``/``test``/``all`` (see :func:`resolve_split`), or
        subjects: explicit subject ids (exactly one of ``split`` / ``subjects``).
        out_path: parquet file to write; chunks go to ``<out_path>.parts/`` and a rerun with
            the same arguments resumes. ``None``: keep in memory only.
        splits_file: split file for ``split`` (default: the checkpoint run's).
        config: an :class:`~swiftlib.interpret.config.EmbeddingConfig` (None: defaults).
        **options: its fields by name, replacing the config's values: ``level``
            (``"subject"`` or ``"window"``), ``stages``, ``sequence_length``,
            ``stride_between_seq``, ``stride_within_seq``, ``batch_size``, ``precision``,
            ``device``, ``chunk_subjects``, ``num_workers``, ``progress``.

    Returns:
        DataFrame (see the module docstring), also written to ``out_path``.
    """
    cfg = EmbeddingConfig.resolve(
        config, options, caller="extract_embeddings()", also=_OWN_KEYWORDS
    )
    if (split is None) == (subjects is None):
        raise ValueError(
            "give exactly one of split= ('train'|'val'|'test'|'all') or subjects= (a list of ids)"
        )
    store = as_store(store)
    if subjects is None:
        subjects = resolve_split(store, split, checkpoint, splits_file)
    inputs = load_inference_inputs(checkpoint, store, subjects, cfg)
    params = {
        "level": cfg.level,
        "stages": list(cfg.stages),
        "sequence_length": inputs.sequence_length,
        "stride": inputs.stride_between_seq,
        "precision": cfg.precision,
    }
    if inputs.stride_within_seq != 1:
        params["stride_within_seq"] = inputs.stride_within_seq
    parts = _Parts(out_path, _signature(inputs, params)) if out_path is not None else None
    frames = _embed_missing(inputs, cfg, parts)
    emb = _with_subject_columns(frames, inputs)
    emb.attrs.update(
        {
            "checkpoint": str(checkpoint),
            "store": str(store.root),
            **params,
            "labels": json.dumps(store.labels),
        }
    )
    if out_path is not None:
        from swiftlib.utils.io import atomic_path

        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path, suffix=".parquet.tmp") as tmp:
            emb.to_parquet(tmp, index=False)
        log.info(
            "wrote %d %s embeddings (%d features) to %s",
            len(emb),
            cfg.level,
            inputs.model.num_features,
            out_path,
        )
    return emb


def _embed_missing(inputs: InferenceInputs, cfg: EmbeddingConfig, parts: _Parts | None) -> list:
    """Embed the subjects not already in ``parts``, chunk by chunk; every chunk's table."""
    from tqdm.auto import tqdm

    sids = inputs.subject_ids
    done = parts.subjects() if parts is not None else set()
    todo = [s for s in sids if s not in done]
    if done:
        log.info(
            "resuming: %d of %d subjects already embedded in %s",
            len(sids) - len(todo),
            len(sids),
            parts.folder,
        )
    total = inputs.windows(todo).num_windows if todo else 0
    frames = []
    with tqdm(total=total, desc="embedding", unit="window", disable=not cfg.progress) as bar:
        for c in range(0, len(todo), cfg.chunk_subjects):
            df = _embed_chunk(inputs, todo[c : c + cfg.chunk_subjects], cfg, bar)
            if parts is not None:
                parts.write(df)
            else:
                frames.append(df)
    return parts.read() if parts is not None else frames


def _embed_chunk(inputs: InferenceInputs, sids: list[str], cfg: EmbeddingConfig, bar):
    """Embed every window of ``sids``; returns a DataFrame at ``cfg.level``."""
    import pandas as pd
    from torch.utils.data import DataLoader

    from swiftlib.data.windows import collate_samples

    loader = DataLoader(
        inputs.windows(sids),
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        collate_fn=collate_samples,
    )
    stages = list(cfg.stages)
    ids, starts, feats, stage_feats = [], [], [], [[] for _ in stages]
    with torch.inference_mode(), inputs.autocast():
        for batch in loader:
            x = batch.x.to(inputs.device)  # (B, 1, D, H, W, T)
            if stages:
                emb, pooled = inputs.model.embed_stages(x, stages)  # (B, F), [(B, C_k)]
                for k, t in enumerate(pooled):
                    stage_feats[k].append(t.float().cpu().numpy())
            else:
                emb = inputs.model.embed(x)  # (B, F)
            feats.append(emb.float().cpu().numpy())
            ids.extend(batch.subject_id)
            starts.extend(batch.window_start.tolist())
            bar.update(len(batch.subject_id))
    blocks = {"emb": np.concatenate(feats)}  # (N, F)
    for k, s in zip(stages, stage_feats, strict=True):
        blocks[f"s{k}"] = np.concatenate(s)  # (N, C_k)
    cols = {f"{name}_{i}": arr[:, i] for name, arr in blocks.items() for i in range(arr.shape[1])}
    df = pd.DataFrame(
        {"subject_id": ids, "window_start": np.asarray(starts, dtype=np.int64), **cols}
    )
    df["num_windows"] = 1
    if cfg.level == "subject":
        emb_cols = [c for c in df.columns if c not in ("subject_id", "window_start", "num_windows")]
        agg = df.groupby("subject_id", sort=False)
        df = agg[emb_cols].mean().reset_index()
        df["window_start"] = -1  # a subject row: the mean over all its windows
        df["num_windows"] = agg.size().to_numpy()
    return df


def _with_subject_columns(frames: list, inputs: InferenceInputs):
    """The chunk tables joined to the store's subject columns, in the subjects' order."""
    import pandas as pd

    sids = inputs.subject_ids
    emb = pd.concat(frames, ignore_index=True)
    emb = emb[emb["subject_id"].isin(sids)]
    table = _subject_table(inputs.store).loc[emb["subject_id"]].reset_index(drop=True)
    emb = pd.concat([table, emb.drop(columns=["subject_id"]).reset_index(drop=True)], axis=1)
    order = {s: i for i, s in enumerate(sids)}
    emb = emb.sort_values(
        ["subject_id", "window_start"], key=lambda c: c.map(order) if c.name == "subject_id" else c
    )
    return emb.reset_index(drop=True)


def _subject_table(store):
    df = store.subjects.copy()
    front = [c for c in ("subject_id", "participant_id", "dataset", "site") if c in df.columns]
    labels = [c for c in store.labels if c in df.columns]
    df = df[front + labels]
    df.index = df["subject_id"].astype(str)
    return df


def _signature(inputs: InferenceInputs, params: dict) -> str:
    p = Path(inputs.model.path)
    st = p.stat()
    doc = {
        "checkpoint": str(p.resolve()),
        "size": st.st_size,
        "mtime": int(st.st_mtime),
        "store": str(inputs.store.root.resolve()),
        **params,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Parts:
    """The chunks of one extraction in ``<out_path>.parts/``: what a rerun resumes from.

    A folder written with other arguments (its ``signature.json`` differs) is refused."""

    def __init__(self, out_path, signature: str):
        out_path = Path(out_path)
        self.folder = out_path.with_name(out_path.name + ".parts")
        sig_file = self.folder / "signature.json"
        if self.folder.exists() and sig_file.exists():
            have = json.loads(sig_file.read_text()).get("signature")
            if have != signature:
                raise ValueError(
                    f"{self.folder} holds chunks of an extraction with other arguments "
                    "(checkpoint, store, level, stages, sequence_length, stride or precision); "
                    "delete it or choose another out_path"
                )
            self.files = sorted(self.folder.glob("part-*.parquet"))
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            sig_file.write_text(json.dumps({"signature": signature}))
            self.files = []

    def subjects(self) -> set[str]:
        import pandas as pd

        done: set[str] = set()
        for p in self.files:
            done.update(pd.read_parquet(p, columns=["subject_id"])["subject_id"].astype(str))
        return done

    def write(self, df) -> None:
        from swiftlib.utils.io import atomic_path

        number = 1 + max((int(p.stem.split("-")[1]) for p in self.files), default=-1)
        name = self.folder / f"part-{number:05d}.parquet"
        with atomic_path(name, suffix=".parquet.tmp") as tmp:
            df.to_parquet(tmp, index=False)
        self.files.append(name)

    def read(self) -> list:
        import pandas as pd

        return [pd.read_parquet(p) for p in sorted(self.files)]


# ---------------------------------------------------------------------------------------------
# benchmark-harness adapter
# ---------------------------------------------------------------------------------------------


class EmbeddingAdapter:
    """Checkpoint → embedding function, for cross-model benchmark harnesses.

    Example::

        enc = EmbeddingAdapter.from_checkpoint("runs/ft/checkpoints/best.ckpt")
        z = enc.embed(batch)  # (B, 1, D, H, W, T) torch or numpy -> (B, F) float32 torch
        enc.num_features, enc.input_shape   # F, (1, D, H, W, T) the model expects

    ``input_shape`` is the store contract's grid with the model's window length; data must be
    preprocessed like the training store (``contract``: grid, voxel size, MNI space,
    normalisation). A 5D batch ``(B, D, H, W, T)`` gets the channel axis added.
    """

    def __init__(
        self, model: InferenceModel, precision: str = "fp32", batch_size: int | None = None
    ):
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.device = next(model.module.parameters()).device
        autocast_context(precision, self.device)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint,
        device: str = "auto",
        precision: str = "fp32",
        batch_size: int | None = None,
    ) -> EmbeddingAdapter:
        model = load_inference_model(checkpoint, device=device)
        return cls(model, precision=precision, batch_size=batch_size)

    @property
    def num_features(self) -> int:
        return self.model.num_features

    @property
    def contract(self) -> dict | None:
        return self.model.contract

    @property
    def input_shape(self) -> tuple[int, ...]:
        grid = tuple((self.contract or {}).get("grid") or ())
        return (1, *grid, model_frames(self.model))

    def embed(self, x) -> torch.Tensor:
        """``x (B, 1, D, H, W, T)`` (or ``(B, D, H, W, T)``) → ``(B, num_features)`` float32
        on CPU."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if x.ndim == 5:
            x = x.unsqueeze(1)  # (B, D, H, W, T) -> (B, 1, D, H, W, T)
        want = self.input_shape
        if x.ndim != 6 or (len(want) == 5 and tuple(x.shape[1:5]) != want[:4]):
            raise ValueError(
                f"embed: input shape {tuple(x.shape)}; expected (B, {', '.join(map(str, want))}) "
                "(B, 1, D, H, W, T) on the checkpoint's store grid"
            )
        outs = []
        step = self.batch_size or x.shape[0]
        with torch.inference_mode(), autocast_context(self.precision, self.device):
            for i in range(0, x.shape[0], step):
                xb = x[i : i + step].to(self.device, torch.float32)  # (b, 1, D, H, W, T)
                outs.append(self.model.embed(xb).float().cpu())  # (b, F)
        return torch.cat(outs)

    __call__ = embed
