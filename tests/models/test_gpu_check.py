"""The prepared GPU check script runs end to end in its CPU ``--dry-run`` mode, and its exit
status reports failed CPU↔GPU agreement."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DRY = [
    "--dry-run",
    "--presets",
    "swift_v2_test",
    "--max-batch",
    "2",
    "--warmup",
    "0",
    "--repeats",
    "1",
]


def test_gpu_check_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OUT", raising=False)
    gpu_check = _load_gpu_check()
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main([*DRY, "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["ok"] and report["failures"] == []
    (res,) = report["results"]
    agr = res["agreement"]
    assert agr["fp32_ok"] and agr["bf16_ok"]
    assert agr["overrides"]["layer_scale_init"] == gpu_check.AGREEMENT_LAYER_SCALE  # blocks matter
    assert res["eager"]["largest_batch"] == 2
    assert res["eager"]["batch_2"]["samples_per_s"] > 0
    assert res["gflop_per_sample_step"] > 0
    assert "| swift_v2_test | eager | 2 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "constant, value, flag",
    [
        ("FP32_MAX_REL_ERR", -1.0, "fp32_ok"),  # no error can be below a negative tolerance
        ("BF16_MIN_COSINE", 1.5, "bf16_ok"),  # no cosine reaches 1.5
    ],
)
def test_gpu_check_exits_non_zero_when_agreement_fails(
    tmp_path, monkeypatch, capsys, constant, value, flag
):
    monkeypatch.delenv("OUT", raising=False)
    gpu_check = _load_gpu_check()
    monkeypatch.setattr(gpu_check, constant, value)
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main([*DRY, "--json", str(out)])
    assert rc == 1
    report = json.loads(out.read_text())
    (res,) = report["results"]
    assert res["agreement"][flag] is False
    assert not report["ok"] and any(flag[:4] in f for f in report["failures"])
    assert "FAILED: swift_v2_test" in capsys.readouterr().err


def test_gpu_check_exits_non_zero_when_agreement_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    gpu_check = _load_gpu_check()

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "agreement", broken)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*DRY, "--json", str(out)]) == 1
    assert "agreement errored" in json.loads(out.read_text())["failures"][0]
    # skipping the agreement check on purpose is not a failure
    assert gpu_check.main([*DRY, "--skip-agreement", "--json", str(out)]) == 0


def test_gpu_check_without_cuda_says_so(monkeypatch):
    gpu_check = _load_gpu_check()
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--presets", "swift_v2_test"]) == 2


def test_gpu_check_fixed_batch_steps_down_on_oom(tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    gpu_check = _load_gpu_check()
    real = gpu_check.try_step
    # "OOM" above 2
    monkeypatch.setattr(gpu_check, "try_step", lambda tr, n: n <= 2 and real(tr, n))
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main([*DRY, "--skip-agreement", "--batch", "5", "--json", str(out)]) == 0
    eager = json.loads(out.read_text())["results"][0]["eager"]
    assert eager["largest_batch"] == 2 and eager["batch_2"]["samples_per_s"] > 0  # 5 → 4 → 3 → 2


def test_prepare_compile_keeps_lookups_out_of_graphs(monkeypatch):
    import torch

    from swiftlib.models import create_model
    from swiftlib.models.layers import attention

    gpu_check = _load_gpu_check()
    for name in ("compute_attn_mask", "window_gather_index"):
        monkeypatch.setattr(attention, name, getattr(attention, name))  # restored afterwards
    model = create_model("swift_v2_test").eval()
    x = torch.randn(1, 1, 12, 16, 20, 6)
    with torch.no_grad():
        before = model.forward_features(x)
        gpu_check.prepare_compile()
        first = attention.compute_attn_mask
        gpu_check.prepare_compile()  # idempotent: wrapped once
        assert attention.compute_attn_mask is first and first._swiftlib_compile_disabled
        torch.testing.assert_close(model.forward_features(x), before, rtol=0, atol=0)
