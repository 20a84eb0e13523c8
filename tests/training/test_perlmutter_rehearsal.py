"""The Perlmutter preset chain rehearsed on CPU: ``notebooks/params/perlmutter_ukb.yaml`` used
unchanged — DeepSpeed ZeRO-2 bf16 SimMIM pretraining → fine-tuning ``init_from`` the
pretraining run's ``checkpoints/best.ckpt`` (a ZeRO folder) → evaluation of the fine-tuned
``best.ckpt`` — through the same notebooks and ``swiftlib run``, with only the accelerator
(``pin_memory`` goes with it) and the sizes overridden by ``-p`` (``$SCRATCH`` points at a
temporary folder holding a tiny synthetic store where the preset expects the UKB store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from swiftlib.cli import main
from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort
from tests.conftest import TRAIN_KW

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "notebooks" / "params" / "perlmutter_ukb.yaml"
CPU = [
    "-p",
    "accelerator",
    "cpu",
    "-p",
    "devices",
    "1",
    "-p",
    "num_nodes",
    "1",
    "-p",
    "num_workers",
    "0",
    "-p",
    "pin_memory",
    "false",
]
SIZES = [
    "-p",
    "model",
    "swift_v2_test",
    "-p",
    "batch_size",
    "4",
    "-p",
    "sequence_length",
    "8",
    "-p",
    "max_epochs",
    "1",
]


def _run(notebook: str, run_dir: Path, *overrides: str) -> dict:
    rc = main(
        [
            "run",
            str(ROOT / "notebooks" / notebook),
            "-f",
            str(PRESET),
            "-o",
            str(run_dir),
            "-q",
            *overrides,
        ]
    )
    doc = json.loads((run_dir / "results.json").read_text())
    assert rc == 0 and doc["status"] == "ok", doc.get("error")
    return doc


def test_perlmutter_ukb_preset_chain_runs_unchanged_on_cpu(tmp_path, monkeypatch):
    preset = yaml.safe_load(PRESET.read_text())
    # what the rehearsal must not change: the strategies and the checkpoint chain of the preset
    assert preset["01_pretrain_simmim"]["strategy"] == "deepspeed_stage_2"
    assert preset["01_pretrain_simmim"]["precision"] == "bf16-mixed"
    assert preset["01_pretrain_simmim"]["pin_memory"] is True
    assert preset["01_finetune"]["pin_memory"] is True
    in_preset = "$SCRATCH/swiftlib/runs"
    assert preset["01_finetune"]["init_from"] == f"{in_preset}/ukb_pretrain/checkpoints/best.ckpt"
    evaluated = f"{in_preset}/ukb_finetune_sex/checkpoints/best.ckpt"
    assert preset["02_evaluate"]["checkpoint"] == evaluated
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("SCRATCH", str(scratch))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    make_synthetic_cohort(
        scratch / "swiftlib" / "stores" / "ukb", config=SyntheticConfig(**TRAIN_KW), progress=False
    )
    runs = scratch / "swiftlib" / "runs"
    runs.mkdir(parents=True)  # the SLURM templates mkdir -p RUN_DIR; -o needs its parent

    pre = _run("02_pretrain/01_pretrain_simmim.ipynb", runs / "ukb_pretrain", *CPU, *SIZES)
    assert pre["parameters"]["strategy"] == "deepspeed_stage_2"
    assert pre["parameters"]["precision"] == "bf16-mixed"
    best = runs / "ukb_pretrain" / "checkpoints" / "best.ckpt"
    assert best.is_dir() and any(best.glob("*/*optim_states.pt"))  # a ZeRO folder, as on Perlmutter
    # consolidated by fit on rank 0
    assert pre["artifacts"]["best_checkpoint_fp32"] == "checkpoints/best.fp32.ckpt"
    assert (runs / "ukb_pretrain" / "checkpoints" / "best.fp32.ckpt").is_file()

    ft = _run("03_downstream/01_finetune.ipynb", runs / "ukb_finetune_sex", *CPU, *SIZES)
    # as written in the preset
    assert ft["parameters"]["init_from"] == preset["01_finetune"]["init_from"]
    assert ft["config"]["task"]["init_from"] == str(best)  # $SCRATCH expanded
    assert ft["parameters"]["strategy"] == "ddp" and 0 <= ft["metrics"]["val/acc"] <= 1

    ev = _run("03_downstream/02_evaluate.ipynb", runs / "ukb_eval", "-p", "accelerator", "cpu")
    assert ev["metrics"]["test/num_subjects"] == 2.0
    # evaluation of the fine-tuned checkpoint reproduces the fine-tuning run's own test loss
    # (bf16-mixed there, fp32 here)
    assert ev["metrics"]["test/loss"] == pytest.approx(ft["metrics"]["test/loss"], abs=5e-3)
