"""``02_pretrain/02_pretrain_contrastive`` runs headless through ``swiftlib run`` with tiny
parameters, and its checkpoint starts a fine-tuning run."""

from __future__ import annotations

import json
from pathlib import Path

from swiftlib.cli import main
from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "02_pretrain" / "02_pretrain_contrastive.ipynb"


def test_contrastive_notebook_runs_and_its_encoder_starts_fine_tuning(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = make_synthetic_cohort(
        tmp_path / "store",
        progress=False,
        config=SyntheticConfig(
            num_subjects=16, seed=11, voxel_size=8.0, grid=(20, 24, 28), num_frames=40, tr=1.0
        ),
    )
    tiny = [
        "-p",
        "store_path",
        str(store.root),
        "-p",
        "splits_dir",
        str(tmp_path / "splits"),
        "-p",
        "model",
        "swift_v2_test",
        "-p",
        "model_overrides",
        "{}",
        "-p",
        "sequence_length",
        "8",
        "-p",
        "batch_size",
        "4",
        "-p",
        "max_epochs",
        "1",
    ]
    run = tmp_path / "run"
    assert main(["run", str(NOTEBOOK), "-o", str(run), "-q", *tiny]) == 0
    doc = json.loads((run / "results.json").read_text())
    assert doc["status"] == "ok" and doc["kind"] == "pretrain"
    assert doc["config"]["kind"] == "contrastive" and doc["config"]["data"]["pairs"]
    m = doc["metrics"]
    assert 0 < m["val/nt_xent"] and 0 <= m["val/top1"] <= 1 and m["val/distance_ratio"] > 0
    best = run / doc["artifacts"]["best_checkpoint"]
    assert best.is_file()

    from swiftlib.models import create_model
    from swiftlib.tasks.common import load_encoder_weights

    encoder = create_model("swift_v2_test", num_classes=0)
    report = load_encoder_weights(encoder, best, "swift_v2_test", {}, store.contract())
    assert report["kind"] == "contrastive" and len(report["loaded"]) == len(encoder.state_dict())
