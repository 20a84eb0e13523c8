"""Science checks for training (`make science`): on the synthetic cohort the model must
learn what was planted and nothing else. Slow: minutes each on 2 CPU cores.

Each check writes ``papermill_runs/science/<check>/results.json`` (kind, metrics, the
thresholds) so the numbers are recorded beside the code that produced them.

Status (2026-11-28): not yet passed. On a machine shared by several jobs (load 7-12) a
from-scratch fine-tune of this model for 200 steps reached test AUROC ~0.43 for `sex`
(4 s/step; the window-level connectivity signal is not yet picked up) — the budget here
needs a quiet machine or the GPU; see docs/training.md "Science checks".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftlib.results import save_results

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "papermill_runs" / "science"
# A small SwiFT v2 (patch 6x6x6x2, ~1 M parameters). LayerScale is off: with its 1e-5
# start the blocks barely contribute within a CPU-sized budget of a few hundred steps.
MODEL = {"model": "swift_v2_5m", "model_overrides": {"depths": [1, 1, 2, 1], "embed_dim": 24,
                                                      "num_heads": [2, 4, 8, 16], "drop_path_rate": 0.0,
                                                      "layer_scale_init": 0.0}}


@pytest.fixture(scope="module")
def science_store(tmp_path_factory):
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    # 120 frames so that windows of 20 frames taken every 3rd frame (48 s at TR 0.8) hold
    # a few cycles of the 0.01-0.1 Hz networks: connectivity is measurable within a window
    return make_synthetic_cohort(OUT / "store", config=SyntheticConfig(num_subjects=60, seed=0, num_frames=120),
                                 progress=False)


def _fit(store, check, kind="finetune", task=None, epochs=40):
    from swiftlib.training import fit

    return fit({
        "kind": kind, "run_dir": str(OUT / check / "run"), "seed": 0,
        "data": {"store_path": str(store.root), "sequence_length": 20, "stride_within_seq": 3, "batch_size": 8,
                 "num_workers": 2,
                 "splits_dir": str(OUT / "splits")},
        "task": {**MODEL, **(task or {}), "optim": {"lr": 1e-3, "weight_decay": 0.05, "warmup_fraction": 0.1}},
        "trainer": {"max_epochs": epochs, "enable_progress_bar": False, "accelerator": "cpu"},
    })


def _record(check, res, thresholds, ok):
    save_results(OUT / check, "finetune" if "recon" not in check else "pretrain", res.metrics,
                 parameters={"thresholds": thresholds}, artifacts={"run": OUT / check / "run"},
                 status="ok" if ok else "failed", error=None if ok else f"thresholds not met: {thresholds}")


def test_sex_is_learned(science_store):
    res = _fit(science_store, "finetune_sex", task={"label": "sex", "task": "classification"})
    ok = res.metrics["test/auroc"] >= 0.95
    _record("finetune_sex", res, {"test/auroc": ">= 0.95"}, ok)
    assert ok, res.metrics


def test_age_is_learned(science_store):
    res = _fit(science_store, "finetune_age", task={"label": "age", "task": "regression"})
    ok = res.metrics["test/r2"] >= 0.6
    _record("finetune_age", res, {"test/r2": ">= 0.6"}, ok)
    assert ok, res.metrics


def test_null_label_stays_at_chance(science_store):
    res = _fit(science_store, "finetune_null", task={"label": "null_label", "task": "classification"})
    ok = abs(res.metrics["test/auroc"] - 0.5) <= 0.1 if res.metrics["test/auroc"] == res.metrics["test/auroc"] else False
    _record("finetune_null", res, {"test/auroc": "0.5 ± 0.1"}, ok)
    assert ok, res.metrics


def test_simmim_beats_the_mean_predictor(science_store):
    res = _fit(science_store, "simmim_recon", kind="pretrain", epochs=10)
    ratio = res.metrics["test/recon_loss"] / res.metrics["test/mean_predictor_loss"]
    ok = ratio <= 0.5
    _record("simmim_recon", res, {"test/recon_loss / test/mean_predictor_loss": "<= 0.5", "measured": ratio}, ok)
    assert ok, res.metrics
