"""``swiftlib.models.layers.attention`` on a GPU: which SDPA kernel the SwiFT v2 window
attention runs at the real 96³×20 shapes in bf16 (training: forward + backward), for
``swift_v2_51m`` (head_dim 16) and ``swift_v2_202m`` (head_dim 32).

The probe (:mod:`tests.gpu.sdpa_probe`, in a process of its own) profiles one training step
and replays every distinct attention call with one backend allowed at a time. Its report is
copied to ``$OUT/sdpa_backend.json`` when ``OUT`` is set.

Asserted: a fused backend (flash, memory-efficient or cuDNN) runs every call, and the model's
default dispatch never falls back to the math kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.gpu import common
from tests.gpu.common import GPU_ONLY

pytestmark = GPU_ONLY

ROOT = Path(__file__).resolve().parents[2]


def test_fused_sdpa_kernel_at_real_shapes(tmp_path):
    report_path = tmp_path / "sdpa_backend.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.gpu.sdpa_probe", str(report_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(report_path.read_text())
    out = common.out_dir()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sdpa_backend.json").write_text(report_path.read_text())
    print(
        f"SDPA backends at {report['grid']} bf16: "
        f"{ {p: r['model_backends'] for p, r in report['presets'].items()} }"
    )
    assert set(report["presets"]) == {"swift_v2_51m", "swift_v2_202m"}
    assert report["fused_only"], "\n".join(report["problems"])
