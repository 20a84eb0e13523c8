"""The training notebooks' ``resume_from`` parameter: a rerun given the interrupted run's
``last.ckpt`` continues from that checkpoint's step (fit's exact resume), not from step 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort
from swiftlib.notebook_config import fit_config
from swiftlib.viz.training import read_scalars

from .helpers import run_ok

ROOT = Path(__file__).resolve().parents[2]
FINETUNE = ROOT / "notebooks" / "03_downstream" / "01_finetune.ipynb"


def _global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def test_resume_from_lands_at_the_top_of_the_run_config(tmp_path):
    cfg = fit_config("finetune", tmp_path, resume_from="runs/ft/checkpoints/last.ckpt")
    from swiftlib import notebook as nb

    assert cfg.resume_from == nb.resolve("runs/ft/checkpoints/last.ckpt")
    assert fit_config("pretrain", tmp_path, resume_from="").resume_from is None
    assert fit_config("contrastive", tmp_path).resume_from is None


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return make_synthetic_cohort(
        root / "store",
        progress=False,
        config=SyntheticConfig(
            num_subjects=12, seed=5, voxel_size=8.0, grid=(20, 24, 28), num_frames=24, tr=1.0
        ),
    )


def test_finetune_notebook_rerun_with_resume_from_continues_the_checkpoint(
    tiny_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = {
        "store_path": str(tiny_store.root),
        "splits_dir": str(tmp_path / "splits"),
        "init_from": "",
        "model": "swift_v2_test",
        "model_overrides": {},
        "sequence_length": 8,
        "windows_per_subject": 1,
        "batch_size": 4,
    }
    first = tmp_path / "first"
    run_ok(FINETUNE, first, {**common, "max_epochs": 1})
    step1 = _global_step(first / "checkpoints" / "last.ckpt")
    assert step1 > 0

    again = tmp_path / "again"
    last = first / "checkpoints" / "last.ckpt"
    doc = run_ok(FINETUNE, again, {**common, "max_epochs": 2, "resume_from": str(last)})
    assert doc["config"]["resume_from"] == str(last)
    assert _global_step(again / "checkpoints" / "last.ckpt") == 2 * step1
    # only the second epoch ran here: its epoch-level loss is logged at step 2 * step1, and
    # nothing at the first epoch's end (a restart from step 0 would log both)
    scalars = read_scalars(again)
    epochs = scalars[scalars["tag"] == "train/loss_epoch"]["step"].tolist()
    assert epochs and min(epochs) > step1, epochs
