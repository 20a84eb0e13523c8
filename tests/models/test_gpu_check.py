"""The prepared GPU check script runs end to end in its CPU ``--dry-run`` mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run",
         "--presets", "swift_v2_test", "--max-batch", "2", "--warmup", "0", "--repeats", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (res,) = report["results"]
    assert res["agreement"]["fp32_ok"] and res["agreement"]["bf16_ok"]
    assert res["eager"]["largest_batch"] == 2
    assert res["eager"]["batch_2"]["samples_per_s"] > 0
    assert "| swift_v2_test | eager | 2 |" in proc.stdout
