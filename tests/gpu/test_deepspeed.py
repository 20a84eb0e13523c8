"""``swiftlib.training.deepspeed`` on a GPU: ZeRO-2 in bf16 on one device (Lightning's
``DeepSpeedStrategy`` with the validated config) trains SimMIM, writes a sharded checkpoint
directory, and that directory converts to one fp32 checkpoint holding the trained weights,
which initialises an encoder for fine-tuning.

The training runs in its own process (:mod:`tests.gpu.deepspeed_worker`); skipped when
DeepSpeed is not installed (the suite carries it as a wheel: see benchmarks/gpu_suite.sh).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.gpu.common import GPU_ONLY

pytestmark = [
    *GPU_ONLY,
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None,
        reason="DeepSpeed is not installed (carry its wheel: benchmarks/gpu_suite.sh)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_zero2_bf16_one_gpu_checkpoint_converts(tmp_path):
    from swiftlib.models import create_model
    from swiftlib.tasks import common as common_tasks
    from swiftlib.tasks import load_encoder_weights
    from swiftlib.training.deepspeed import convert_deepspeed_checkpoint
    from tests.gpu.deepspeed_worker import STEPS

    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "DS_ACCELERATOR": "cuda",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.gpu.deepspeed_worker", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({k: v for k, v in run.items() if k != "losses"}))
    assert run["strategy"].endswith("DeepSpeedStrategy"), run["strategy"]
    assert run["zero_stage"] == 2 and run["bf16"] and run["ds_accelerator"] == "cuda"
    assert run["devices"] == ["cuda"] and run["param_dtypes"] == ["torch.bfloat16"]
    assert run["global_step"] == STEPS and len(run["losses"]) == STEPS
    assert all(math.isfinite(v) for v in run["losses"]) and math.isfinite(run["best_score"])

    best = Path(run["best"])
    assert best.is_dir(), f"{best}: expected a DeepSpeed checkpoint directory"
    shards = sorted(p.name for p in best.rglob("*.pt"))
    assert any(n.endswith("model_states.pt") for n in shards) and any(
        n.endswith("optim_states.pt") for n in shards
    ), shards

    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    moved = [
        k for k in weights["initial"] if not torch.equal(weights["initial"][k], weights["final"][k])
    ]
    assert any(k.startswith("encoder.") for k in moved), "ZeRO-2 steps changed no encoder weight"

    plain = convert_deepspeed_checkpoint(best, tmp_path / "best_fp32.ckpt")
    ckpt = torch.load(plain, map_location="cpu", weights_only=True)
    assert ckpt["swiftlib"]["kind"] == "pretrain" and ckpt["swiftlib"]["model"] == "swift_v2_test"
    state = {
        k[len("model.") :]: v.detach()
        for k, v in ckpt["state_dict"].items()
        if k.startswith("model.")
    }
    assert set(state) == set(weights["final"]), "converted keys differ from the trained model's"
    for k, v in state.items():
        assert v.dtype == torch.float32, f"{k}: {v.dtype} in the consolidated checkpoint"
        # fp32 master weights vs the bf16 copies the module trained with: bf16 rounding apart
        tol = 1e-2 * float(v.abs().max()) + 1e-6
        assert float((v - weights["final"][k]).abs().max()) <= tol, f"{k}: converted weights differ"
    encoder = create_model("swift_v2_test", num_classes=0)
    report = load_encoder_weights(encoder, plain, "swift_v2_test")
    assert report["kind"] == "pretrain" and report["loaded"] and not report["missing"]
    # the one loader also takes the ZeRO folder itself
    if hasattr(common_tasks, "resolve_checkpoint"):
        encoder = create_model("swift_v2_test", num_classes=0)
        report = load_encoder_weights(encoder, best, "swift_v2_test")
        assert report["kind"] == "pretrain" and report["loaded"] and not report["missing"]
        torch.testing.assert_close(
            encoder.state_dict()["patch_embed.proj.weight"],
            state["encoder.patch_embed.proj.weight"],
        )
