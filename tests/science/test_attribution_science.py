"""Attribution science checks (``make science``; slow), on the models the training checks
fine-tune on the science cohort (conftest.py).

For ``age`` and ``sex`` the trained model must point at the planted regions (voxel-wise
AUROC of the aggregated map ≥ 0.85) and a fully randomised copy must not (≤ 0.6); the
``null_label`` model must show no preference for planted over unlabelled network regions
(0.5 ± 0.1). Each check writes ``papermill_runs/science/attribution_<label>/`` (maps as
NIfTI, results.json) before asserting, so the numbers are kept when a target is missed.
"""

from __future__ import annotations

import time

import pytest

from swiftlib.results import save_results

from .conftest import OUT

pytestmark = pytest.mark.slow

RECOVERY_MIN, RANDOMISED_MAX, NULL_BAND = 0.85, 0.6, 0.1
# SmoothGrad: |gradient| averaged over 8 noisy copies of each window (noise σ = 10 % of its
# value range), mean over windows, frames and subjects. Measured alternatives on these models
# (recovery / randomised; sex | age): IG signed 0.54 / – | 0.96 / 0.49 (a connectivity effect
# flips the sign of x·∂y/∂x between subjects and cancels); IG abs 0.95 / 0.82 | 0.93 / 0.56
# and IG subject_abs 0.95 / 0.63 | 0.94 / 0.42 (input × gradient of a random network still
# follows the correlated, high-variance planted regions of the input); plain saliency
# 0.91 / 0.48 | 0.84 / 0.21 (noisier). Gradients alone pass model randomisation (Adebayo
# et al. 2018); averaging over noise sharpens them enough to localise both mechanisms.
CHECK = dict(method="smoothgrad", aggregate="abs", nt_samples=8, noise_level=0.1)


def _held_out(store, run):
    from swiftlib.interpret.embeddings import resolve_split

    return resolve_split(store, "test", run.best_checkpoint)


@pytest.mark.parametrize("label", ["sex", "age"])
def test_planted_region_recovery_and_randomisation(science_store, trained, label):
    from swiftlib.interpret.attributions import (
        attribute,
        randomised_model,
        recovery_auroc,
        region_preference,
    )

    run = trained(label)
    t0 = time.perf_counter()
    subjects = _held_out(science_store, run)
    att = attribute(
        run.best_checkpoint, science_store, subjects, windows=2, progress=False, **CHECK
    )
    rnd = attribute(
        randomised_model(run.best_checkpoint),
        science_store,
        subjects,
        windows=2,
        progress=False,
        **CHECK,
    )
    out = OUT / f"attribution_{label}"
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "test/recovery_auroc": recovery_auroc(att.to_nifti(), science_store, label),
        "test/randomised_auroc": recovery_auroc(rnd.to_nifti(), science_store, label),
        "test/region_preference": region_preference(att.to_nifti(), science_store, [label]),
        **{k: v for k, v in run.metrics.items() if k.startswith("test/")},
    }
    att.save(out)
    ok = (
        metrics["test/recovery_auroc"] >= RECOVERY_MIN
        and metrics["test/randomised_auroc"] <= RANDOMISED_MAX
    )
    save_results(
        out,
        "attribute",
        metrics=metrics,
        parameters={
            "label": label,
            "subjects": subjects,
            "thresholds": {
                "test/recovery_auroc": f">= {RECOVERY_MIN}",
                "test/randomised_auroc": f"<= {RANDOMISED_MAX}",
            },
            **CHECK,
        },
        timings={"total_s": time.perf_counter() - t0},
        status="ok" if ok else "failed",
        error=None if ok else "thresholds not met",
    )
    assert metrics["test/recovery_auroc"] >= RECOVERY_MIN, metrics
    assert metrics["test/randomised_auroc"] <= RANDOMISED_MAX, metrics


def test_null_label_model_prefers_no_planted_region(science_store, trained):
    from swiftlib.interpret.attributions import attribute, region_preference

    run = trained("null_label")
    t0 = time.perf_counter()
    subjects = _held_out(science_store, run)
    att = attribute(
        run.best_checkpoint, science_store, subjects, windows=2, progress=False, **CHECK
    )
    pref = region_preference(att.to_nifti(), science_store, ["sex", "age"])
    out = OUT / "attribution_null_label"
    out.mkdir(parents=True, exist_ok=True)
    ok = abs(pref - 0.5) <= NULL_BAND
    save_results(
        out,
        "attribute",
        metrics={"test/planted_preference": pref},
        parameters={
            "label": "null_label",
            "subjects": subjects,
            "thresholds": {"test/planted_preference": f"0.5 ± {NULL_BAND}"},
            **CHECK,
        },
        timings={"total_s": time.perf_counter() - t0},
        status="ok" if ok else "failed",
        error=None if ok else "threshold not met",
    )
    assert ok, pref
