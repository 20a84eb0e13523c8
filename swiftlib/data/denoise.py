"""Optional denoising with fMRIPrep's confounds table, before normalisation.

fMRIPrep writes, beside each preprocessed run, a ``desc-confounds_timeseries.tsv`` table of
nuisance signals (head motion, white-matter and CSF signals, CompCor components, cosine
drift regressors, framewise displacement). Denoising regresses a chosen set of them out of
every in-brain voxel's time series. swiftlib does not choose the set itself: it calls
nilearn's published strategies, :func:`nilearn.interfaces.fmriprep.load_confounds_strategy`

* ``simple``: motion (6 parameters, derivatives, squares), WM/CSF signals, cosine drifts;
* ``scrubbing``: ``simple`` with full WM/CSF terms, plus removal of high-motion frames
  (framewise displacement / standardised DVARS above nilearn's thresholds) — *frames are
  removed*, so the stored series is shorter and not evenly spaced in time;
* ``compcor``: anatomical CompCor components, motion and cosine drifts;

and :func:`nilearn.signal.clean` (no extra detrending, filtering or standardisation: the
strategy's cosine regressors do the high-pass, swiftlib's normalisation the scaling). Each
voxel keeps its temporal mean, so ``psc`` and the in-brain fill still mean what they did.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from swiftlib.data.inputs import PreprocessError

__all__ = ["DENOISE_STRATEGIES", "find_confounds", "load_strategy", "denoise", "mean_fd"]

DENOISE_STRATEGIES = ("simple", "scrubbing", "compcor")
_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo")


def find_confounds(bold_path) -> Path | None:
    """fMRIPrep's confounds table for a BOLD file, or None: the same ``sub``/``ses``/``task``
    /``acq``/``run``… entities, ``desc-confounds_timeseries.tsv`` (≥ 20.2) or
    ``desc-confounds_regressors.tsv`` (older)."""
    p = Path(bold_path)
    parts = p.name.split(".")[0].split("_")
    keep = [x for x in parts if x.split("-")[0] in _ENTITIES and "-" in x]
    for desc in ("confounds_timeseries", "confounds_regressors"):
        cand = p.parent / "_".join(keep + [f"desc-{desc}.tsv"])
        if cand.exists():
            return cand
    return None


def load_strategy(bold_path, strategy: str):
    """``(confounds DataFrame (T, K), sample_mask (kept frame indices) or None, tsv path)``
    through nilearn's ``load_confounds_strategy``. Raises :class:`PreprocessError` naming
    the scan when its confounds table is missing or lacks what the strategy needs."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    if strategy not in DENOISE_STRATEGIES:
        raise PreprocessError(f"denoise={strategy!r}: expected one of {DENOISE_STRATEGIES}")
    tsv = find_confounds(bold_path)
    if tsv is None:
        raise PreprocessError(
            f"{bold_path}: denoise={strategy!r} needs fMRIPrep's confounds table beside the scan "
            "(…_desc-confounds_timeseries.tsv with the same sub/ses/task/run entities); none "
            "found — preprocess without --denoise, or add the fMRIPrep confounds files"
        )
    try:
        confounds, sample_mask = load_confounds_strategy(str(bold_path), denoise_strategy=strategy)
    except Exception as e:  # nilearn raises KeyError/ValueError/… for incomplete tables
        raise PreprocessError(
            f"{bold_path}: denoise={strategy!r} could not read the confounds {tsv.name} "
            f"({type(e).__name__}: {e}); expected fMRIPrep's columns for that strategy"
        ) from None
    return confounds, sample_mask, tsv


def denoise(series: np.ndarray, confounds, sample_mask, tr: float, name: str = "image"):
    """Regress ``confounds`` (T, K) out of ``series`` (N voxels, T frames) with
    :func:`nilearn.signal.clean`; ``sample_mask`` (kept frames) censors the others.

    Returns ``(out (N, T') float32, info)`` where T' = number of kept frames; each voxel keeps
    its temporal mean."""
    from nilearn.signal import clean

    N, T = series.shape
    if len(confounds) != T:
        raise PreprocessError(
            f"{name}: the confounds table has {len(confounds)} rows but the scan has {T} frames; "
            "expected one row per frame (is it the table of another run?)"
        )
    cleaned = clean(
        series.T,  # (T, N)
        confounds=np.asarray(confounds, dtype=np.float64),
        sample_mask=sample_mask,
        t_r=tr,
        detrend=False,
        standardize=None,
        standardize_confounds=True,
        filter=False,
    )  # (T', N)
    kept = np.arange(T) if sample_mask is None else np.asarray(sample_mask)
    info = {
        "confounds": list(map(str, getattr(confounds, "columns", []))),
        "frames_in": int(T),
        "frames_out": int(cleaned.shape[0]),
        "censored_frames": sorted(set(range(T)) - set(kept.tolist())),
    }
    return np.ascontiguousarray(cleaned.T, dtype=np.float32), info  # (N, T')


def mean_fd(tsv) -> float | None:
    """Mean framewise displacement (mm) from a confounds table, or None when it has none."""
    import pandas as pd

    if tsv is None:
        return None
    try:
        fd = pd.read_csv(tsv, sep="\t", na_values=["n/a"], usecols=["framewise_displacement"])
    except (ValueError, OSError):
        return None
    value = float(fd["framewise_displacement"].mean())  # the first frame is n/a
    return None if math.isnan(value) else value
