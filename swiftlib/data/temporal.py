"""Temporal resampling to a target TR, so that a window of a fixed number of frames means a
fixed number of seconds whatever scanner the data came from.

Method: :func:`scipy.signal.resample_poly` along time, per in-brain voxel. The TR ratio is
written as a fraction ``up / down`` (``tr / target_tr``, denominators up to 1000); the
series is upsampled by ``up`` (zeros inserted), low-pass filtered by a Kaiser-windowed FIR
at the lower of the two Nyquist frequencies and downsampled by ``down``. Why this one:

* going to a *longer* TR (e.g. 0.72 s → 0.8 s, or 0.5 s → 2 s) needs an anti-aliasing
  low-pass first, or cardiac and respiratory power above the new Nyquist frequency folds
  back into the 0.01–0.1 Hz band that resting-state analyses read; plain (linear or cubic)
  interpolation has no such filter;
* going to a *shorter* TR it is band-limited (sinc-like) interpolation, which adds no
  frequencies the scan did not have;
* unlike Fourier resampling (:func:`scipy.signal.resample`) it does not treat the run as
  periodic, so the last frames do not bleed into the first; ``padtype="line"`` extends each
  series by its linear trend at both ends, so scanner drift does not ring at the edges.

Frames keep a common time origin: output frame ``k`` is at ``k · target_tr`` seconds after
the first input frame, and only frames inside the acquired span ``[0, (T − 1) · tr]`` are
kept (no extrapolation past the last acquired frame).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["METHOD", "resampling_factors", "resample_time", "num_resampled_frames"]

METHOD = "scipy.signal.resample_poly (polyphase Kaiser FIR anti-aliasing, padtype='line')"
_MAX_DENOMINATOR = 1000
_REL_TOL = 1e-4
_CHUNK_VOXELS = 20_000  # voxels per resample_poly call: bounds the float64 working memory


def resampling_factors(tr: float, target_tr: float) -> tuple[int, int]:
    """``(up, down)`` with ``up / down == tr / target_tr`` (within 1e-4 relative)."""
    if not (tr > 0 and target_tr > 0):
        raise ValueError(f"tr={tr}, target_tr={target_tr}: expected positive seconds")
    ratio = Fraction(tr / target_tr).limit_denominator(_MAX_DENOMINATOR)
    up, down = ratio.numerator, ratio.denominator
    effective = tr * down / up
    if abs(effective - target_tr) > _REL_TOL * target_tr:
        raise ValueError(
            f"tr={tr:g} s → target_tr={target_tr:g} s: no ratio with a denominator ≤ "
            f"{_MAX_DENOMINATOR} within {_REL_TOL:g} (closest gives {effective:.6g} s); round "
            "the target TR"
        )
    return up, down


def num_resampled_frames(num_frames: int, tr: float, target_tr: float) -> int:
    """Frames at ``k · target_tr`` inside the acquired span ``[0, (num_frames − 1) · tr]``."""
    return int(math.floor((num_frames - 1) * tr / target_tr + 1e-6)) + 1


def resample_time(series: np.ndarray, tr: float, target_tr: float) -> tuple[np.ndarray, dict]:
    """Resample ``series`` (N, T) — N voxel time series at ``tr`` seconds — to ``target_tr``.

    Returns ``(out (N, T') float32, info)``; ``info`` records the method, both TRs, ``up``,
    ``down`` and the frame counts (stored with the subject and in the store's settings).
    """
    from scipy.signal import resample_poly

    N, T = series.shape
    up, down = resampling_factors(tr, target_tr)
    T_out = num_resampled_frames(T, tr, target_tr)
    out = np.empty((N, T_out), np.float32)  # (N, T')
    if up == down:
        out[:] = series[:, :T_out]
    else:
        for start in range(0, N, _CHUNK_VOXELS):
            block = series[start : start + _CHUNK_VOXELS].astype(np.float64)  # (n, T)
            res = resample_poly(block, up, down, axis=1, padtype="line")  # (n, ceil(T·up/down))
            out[start : start + _CHUNK_VOXELS] = res[:, :T_out]
    info = {
        "method": METHOD,
        "source_tr": float(tr),
        "target_tr": float(target_tr),
        "up": up,
        "down": down,
        "frames_in": int(T),
        "frames_out": int(T_out),
    }
    return out, info
