"""Temporal resampling to a target TR: exact on band-limited signals, anti-aliased."""

import numpy as np
import pytest

from swiftlib.data.temporal import num_resampled_frames, resample_time, resampling_factors


def _series(freqs, tr, num_frames, phases=(0.3, 1.1, 2.0)):
    t = np.arange(num_frames) * tr
    return np.stack([np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, phases)])  # (N, T)


@pytest.mark.parametrize("tr, target", [(0.72, 0.8), (2.0, 0.8), (0.5, 1.0), (0.8, 0.8)])
def test_a_slow_bold_signal_is_resampled_onto_the_new_times(tr, target):
    freqs = (0.01, 0.05, 0.09)  # the resting-state band
    x = _series(freqs, tr, 400)
    out, info = resample_time(x, tr, target)
    T_out = num_resampled_frames(400, tr, target)
    assert out.shape == (3, T_out) and out.dtype == np.float32
    assert (T_out - 1) * target <= 399 * tr < T_out * target  # inside the acquired span
    expected = _series(freqs, target, T_out)
    inner = slice(T_out // 10, -T_out // 10)  # the FIR's edge transients aside
    assert np.abs(out[:, inner] - expected[:, inner]).max() < 0.02
    assert info["source_tr"] == tr and info["target_tr"] == target
    assert info["frames_in"] == 400 and info["frames_out"] == T_out


def test_power_above_the_new_nyquist_is_filtered_not_aliased():
    tr, target = 0.5, 2.0  # Nyquist 1 Hz → 0.25 Hz
    t = np.arange(600) * tr
    fast = np.sin(2 * np.pi * 0.6 * t)[None]  # 0.6 Hz (cardiac/respiratory range)
    out, _ = resample_time(fast, tr, target)
    assert np.abs(out[:, 20:-20]).max() < 0.05  # removed
    naive = fast[:, ::4]  # plain decimation: folds to a 0.1 Hz BOLD-band oscillation
    assert np.abs(naive).max() > 0.9


def test_resampling_factors_and_refusals():
    assert resampling_factors(0.72, 0.8) == (9, 10)
    assert resampling_factors(2.0, 0.8) == (5, 2)
    assert resampling_factors(0.735, 0.8) == (147, 160)
    with pytest.raises(ValueError, match="target_tr=-1"):
        resampling_factors(1.0, -1)
    with pytest.raises(ValueError, match=r"no ratio with a denominator ≤ 1000"):
        resampling_factors(1.0, 1 / (1 + 1 / 1500))  # 1500:1501
