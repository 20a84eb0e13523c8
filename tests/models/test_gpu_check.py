"""The prepared GPU check script runs end to end in its CPU ``--dry-run`` mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OUT", raising=False)
    gpu_check = _load_gpu_check()
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main(["--dry-run", "--presets", "swift_v2_test", "--max-batch", "2",
                         "--warmup", "0", "--repeats", "1", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    (res,) = report["results"]
    assert res["agreement"]["fp32_ok"] and res["agreement"]["bf16_ok"]
    assert res["eager"]["largest_batch"] == 2
    assert res["eager"]["batch_2"]["samples_per_s"] > 0
    assert res["gflop_per_sample_step"] > 0
    assert "| swift_v2_test | eager | 2 |" in capsys.readouterr().out
