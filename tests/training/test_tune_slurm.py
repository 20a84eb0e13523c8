"""(``slurm`` marker) Two SLURM array workers of ``slurm/optuna_workers.sbatch`` join one
Optuna study in a journal file, on the local single-node cluster of tests/test_slurm.py."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from tests.test_slurm import LOCAL, _submit, slurm_cluster  # noqa: F401  (the cluster fixture)

ROOT = Path(__file__).resolve().parents[2]
TUNE = ROOT / "notebooks" / "03_downstream" / "03_tune_optuna.ipynb"


ARRAY_TIMEOUT_S = 600
POLL_S = 1.0
LOG_TAIL = 2000  # characters of each worker's SLURM log shown when a task fails
ACTIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")


def _wait_for_array(job_id: str, env: dict, timeout: float = ARRAY_TIMEOUT_S) -> list[dict]:
    """``scontrol show job`` records of every array task once none is pending or running."""
    deadline = time.time() + timeout
    records: list[dict] = []
    while time.time() < deadline:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True
        )
        records = [
            dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            for line in out.stdout.splitlines()
        ]
        if records and all(r.get("JobState") not in ACTIVE_STATES for r in records):
            return records
        time.sleep(POLL_S)
    states = [r.get("JobState") for r in records]
    pytest.fail(f"array job {job_id} did not finish in {timeout} s: {states}")


@pytest.mark.slurm
def test_two_array_workers_join_one_study(
    slurm_cluster,  # noqa: F811
    train_store,
    tmp_path,
    capsys,
):
    params = tmp_path / "params.yaml"
    params.write_text(
        "03_tune_optuna:\n"
        f"  store_path: {train_store.root}\n  splits_dir: {tmp_path / 'splits'}\n"
        "  init_from: ''\n  label: age\n  task: regression\n  model: swift_v2_test\n"
        "  model_overrides: {}\n  sequence_length: 8\n  max_epochs: 1\n  modes: [full]\n"
        "  heads: [linear]\n  batch_sizes: [4]\n  layer_decay: []\n  head_dropout: []\n"
        "  weight_decay: []\n  warmup_fraction: []\n  n_trials: 4\n  study_name: slurm\n"
    )
    job_id, run_dir = _submit(
        [
            str(TUNE),
            "-f",
            str(params),
            "-o",
            str(tmp_path / "run"),
            "--array",
            "0-1",
            "--ntasks-per-node",
            "1",
            *LOCAL,
        ],
        slurm_cluster,
        capsys,
    )
    records = _wait_for_array(job_id, slurm_cluster)
    logs = "\n".join(p.read_text()[-LOG_TAIL:] for p in run_dir.glob("slurm-*.out"))
    assert len(records) == 2 and all(r["JobState"] == "COMPLETED" for r in records), logs
    backend = optuna.storages.journal.JournalFileBackend(str(run_dir / "optuna.log"))
    study = optuna.load_study(study_name="slurm", storage=optuna.storages.JournalStorage(backend))
    trials = study.get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) >= 4
    # both array tasks ran trials of the one study, each under swiftlib's journal heartbeat
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert all("heartbeat" in t.user_attrs for t in trials)
    assert all(Path(t.user_attrs["run_dir"]).parent == run_dir / "study" for t in trials)
    for i in (0, 1):
        doc = json.loads((run_dir / f"worker-{i}" / "results.json").read_text())
        assert doc["status"] == "ok" and doc["kind"] == "tune" and doc["study_name"] == "slurm"
