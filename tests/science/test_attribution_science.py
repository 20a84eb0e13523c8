"""Attribution science checks on the 4 mm synthetic cohort (``make science``; slow).

For ``age`` and ``sex``: a model fine-tuned on the 40-subject cohort must point at the
planted regions (voxel-wise AUROC ≥ 0.85) and a randomised copy must not (≤ 0.6); a
``null_label`` model must show no preference for planted over unlabelled network regions.
Each check writes ``papermill_runs/science/<check>/results.json`` (before asserting, so the
numbers are kept when a target is missed).

Training length: ``SWIFTLIB_SCIENCE_EPOCHS`` (default 12) epochs of ``swift_v2_test`` on
8-frame windows; on 2 CPU cores one epoch of the 48³ cohort takes about 2–5 minutes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from swiftlib.results import save_results
from tests.interpret.test_attributions import CHECK

pytestmark = pytest.mark.slow

SCIENCE_DIR = Path(os.environ.get("SWIFTLIB_SCIENCE_DIR", "papermill_runs/science"))
EPOCHS = int(os.environ.get("SWIFTLIB_SCIENCE_EPOCHS", "12"))
RECOVERY_MIN, RANDOMISED_MAX, NULL_BAND = 0.85, 0.6, 0.1


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    return make_synthetic_cohort(tmp_path_factory.mktemp("science") / "store", config=SyntheticConfig(num_subjects=40),
                                 progress=False)


def _train(store, label: str, run_dir: Path):
    from swiftlib.training import fit

    task = "regression" if label == "age" else "classification"
    return fit({
        "kind": "finetune", "run_dir": str(run_dir), "seed": 0,
        "data": {"store_path": str(store.root), "sequence_length": 8, "batch_size": 8, "num_workers": 0,
                 "splits_dir": str(run_dir.parent / "splits")},
        "task": {"model": "swift_v2_test", "label": label, "task": task, "optim": {"lr": 3e-3}},
        "trainer": {"max_epochs": EPOCHS, "enable_progress_bar": False, "accelerator": "cpu"},
    })


def _held_out(store, run):
    from swiftlib.interpret.embeddings import resolve_split

    return resolve_split(store, "val", run.best_checkpoint) + resolve_split(store, "test", run.best_checkpoint)


@pytest.mark.parametrize("label", ["age", "sex"])
def test_planted_region_recovery_and_randomisation(cohort, label, tmp_path):
    from swiftlib.interpret.attributions import (
        attribute,
        randomised_model,
        recovery_auroc,
        region_preference,
    )

    t0 = time.perf_counter()
    run = _train(cohort, label, tmp_path / label)
    subjects = _held_out(cohort, run)
    att = attribute(run.best_checkpoint, cohort, subjects, windows=2, progress=False, **CHECK)
    rnd = attribute(randomised_model(run.best_checkpoint), cohort, subjects, windows=2, progress=False, **CHECK)
    out = SCIENCE_DIR / f"attribution_{label}"
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"test/recovery_auroc": recovery_auroc(att.to_nifti(), cohort, label),
               "test/randomised_auroc": recovery_auroc(rnd.to_nifti(), cohort, label),
               "test/region_preference": region_preference(att.to_nifti(), cohort, [label]),
               **{k: v for k, v in run.metrics.items() if k.startswith("test/")}}
    att.save(out)
    save_results(out, "attribute", metrics=metrics,
                 parameters={"label": label, "epochs": EPOCHS, "subjects": subjects, **CHECK},
                 timings={"total_s": time.perf_counter() - t0})
    assert metrics["test/recovery_auroc"] >= RECOVERY_MIN, metrics
    assert metrics["test/randomised_auroc"] <= RANDOMISED_MAX, metrics


def test_null_label_model_prefers_no_planted_region(cohort, tmp_path):
    from swiftlib.interpret.attributions import attribute, region_preference

    t0 = time.perf_counter()
    run = _train(cohort, "null_label", tmp_path / "null")
    subjects = _held_out(cohort, run)
    att = attribute(run.best_checkpoint, cohort, subjects, windows=2, progress=False, **CHECK)
    pref = region_preference(att.to_nifti(), cohort, ["sex", "age"])
    out = SCIENCE_DIR / "attribution_null_label"
    out.mkdir(parents=True, exist_ok=True)
    save_results(out, "attribute", metrics={"test/planted_preference": pref},
                 parameters={"label": "null_label", "epochs": EPOCHS, "subjects": subjects, **CHECK},
                 timings={"total_s": time.perf_counter() - t0})
    assert abs(pref - 0.5) <= NULL_BAND, pref
