"""Shared fixtures of the science checks (``make science``): the science cohort and one
fine-tuned model per label, trained once per session and reused by the training checks
(metrics) and the attribution checks (maps).

The science cohort is the synthetic cohort with three settings changed from the demo's,
each for a measured reason (docs/training.md, "Science checks"):

* ``normalisation="psc"`` (percent signal change per voxel). Under SwiFT's global z-score
  the static intensity pattern (±25 % tissue contrast) is ~10× the 3 % BOLD fluctuation;
  a from-scratch model on 84 training subjects then stays at chance on ``sex`` (AUROC 0.53
  after 300 steps) while the same model on PSC input reaches 1.0 within 150 steps.
* ``baseline_coupling=-0.9``: sex 0 anticorrelated, sex 1 correlated (±0.9). With 0 vs 0.9
  and 42 training subjects the model memorised subjects (train loss 0.1, test AUROC
  0.6–0.8).
* 120 subjects, 120 frames: windows of 20 frames every 3rd frame (48 s at TR 0.8 s) hold a
  few cycles of the 0.01–0.1 Hz networks. Training draws 4 windows per subject and epoch
  from every possible start (a step of one frame): with only the 2 back-to-back windows per
  subject the model memorised its 84 training subjects (train loss 0.001 after 6 epochs,
  validation AUROC 0.43–0.69).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("SWIFTLIB_SCIENCE_DIR", ROOT / "papermill_runs" / "science"))
EPOCHS = int(os.environ.get("SWIFTLIB_SCIENCE_EPOCHS", "8"))
# A small SwiFT v2 (patch 6x6x6x2, ~1 M parameters). LayerScale is off: with its 1e-5
# start the blocks barely contribute within a CPU-sized budget of a few hundred steps.
MODEL = {
    "model": "swift_v2_5m",
    "model_overrides": {
        "depths": [1, 1, 2, 1],
        "embed_dim": 24,
        "num_heads": [2, 4, 8, 16],
        "drop_path_rate": 0.0,
        "layer_scale_init": 0.0,
    },
}
SCIENCE_COHORT = dict(
    num_subjects=120, seed=0, num_frames=120, normalisation="psc", baseline_coupling=-0.9
)
TASKS = {"sex": "classification", "age": "regression", "null_label": "classification"}


@pytest.fixture(scope="session")
def science_store():
    from swiftlib.data.store import open_store
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = OUT / "store"
    try:  # reuse a finished store made with the same settings (the generator is deterministic)
        store = open_store(root)
        if all(
            store.manifest["dataset_info"].get("synthetic", {}).get(k) == v
            for k, v in SCIENCE_COHORT.items()
        ):
            return store
    except Exception:  # noqa: BLE001 - missing or partial: (re)make it
        pass
    return make_synthetic_cohort(root, config=SyntheticConfig(**SCIENCE_COHORT), progress=False)


def science_fit_config(store_root, label: str, epochs: int = EPOCHS) -> dict:
    """The fit() configuration of the science model for ``label``."""
    return {
        "kind": "finetune",
        "run_dir": str(OUT / f"finetune_{label}" / "run"),
        "seed": 0,
        "data": {
            "store_path": str(store_root),
            "label": label,
            "sequence_length": 20,
            "stride_within_seq": 3,
            "stride_between_seq": 1 / 60,
            "eval_stride_between_seq": 1.0,
            "windows_per_subject": 4,
            "batch_size": 8,
            "num_workers": 2,
            "splits_dir": str(OUT / "splits"),
        },
        "task": {
            **MODEL,
            "label": label,
            "task": TASKS[label],
            "optim": {"lr": 1e-3, "weight_decay": 0.05, "warmup_fraction": 0.1},
        },
        "trainer": {"max_epochs": epochs, "enable_progress_bar": False, "accelerator": "cpu"},
    }


def fit_label(store, label: str, epochs: int = EPOCHS):
    """Fine-tune the science model from scratch on ``label``; the run lives under
    OUT/finetune_<label>/run. With ``SWIFTLIB_SCIENCE_REUSE=1`` a finished run of the very
    same configuration is reused (for iterating on the attribution checks)."""
    import json

    from swiftlib.training import fit
    from swiftlib.training.fit import RunResult

    run_dir = OUT / f"finetune_{label}" / "run"
    cfg = science_fit_config(store.root, label, epochs)
    stamp = run_dir / "science_config.json"
    if (
        os.environ.get("SWIFTLIB_SCIENCE_REUSE") == "1"
        and stamp.is_file()
        and json.loads(stamp.read_text()) == cfg
    ):
        doc = json.loads((run_dir / "results.json").read_text())
        return RunResult(
            run_dir=run_dir,
            status=doc["status"],
            metrics=doc["metrics"],
            best_checkpoint=str(run_dir / doc["artifacts"]["best_checkpoint"]),
            last_checkpoint=str(run_dir / doc["artifacts"]["last_checkpoint"]),
            results_path=run_dir / "results.json",
            monitor=doc.get("monitor", ""),
        )
    res = fit(cfg)
    stamp.write_text(json.dumps(cfg, indent=1))
    return res


@pytest.fixture(scope="session")
def trained(science_store):
    """``trained(label) -> RunResult``: each label's model is trained once per session."""
    runs: dict = {}

    def get(label: str):
        if label not in runs:
            runs[label] = fit_label(science_store, label)
        return runs[label]

    return get
