"""``swiftlib.models`` encoders on a GPU agree with the CPU: ``forward_features`` in fp32
(TF32 off) and bf16 autocast, and the fp32 parameter gradients, for the same weights and input.

Tolerances (stated, per output): fp32 max |GPU − CPU| ≤ 1e-4 × max |CPU|; bf16 cosine ≥ 0.995;
fp32 gradients max |Δ| ≤ 1e-3 × max |CPU grad| per parameter. SwiFT v2 runs with LayerScale
1.0 here (presets: 1e-5) so that every block's attention and MLP move the output.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from swiftlib.models import create_model
from tests.gpu import common
from tests.gpu.common import GPU_ONLY

pytestmark = GPU_ONLY

FP32_MAX_REL_ERR = 1e-4
BF16_MIN_COSINE = 0.995
GRAD_MAX_REL_ERR = 1e-3

CASES = [
    ("swift_v2_test", common.GRID, {"layer_scale_init": 1.0, "drop_path_rate": 0.0}),
    ("swift_v2_factorized_test", common.GRID, {"layer_scale_init": 1.0, "drop_path_rate": 0.0}),
    ("swift_v1_test", (8, 12, 16, 6), {}),  # v1 requires its img_size spatially
]


@pytest.fixture
def highest_fp32():
    """No TF32 (only the precision API: mixing it with the legacy ``allow_tf32`` flags makes
    torch ≥ 2.9 raise when Lightning later reads the setting)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float(
        (a.double() - ref.double()).abs().max() / ref.double().abs().max().clamp(min=1e-12)
    )


@pytest.mark.parametrize("preset, grid, overrides", CASES, ids=[c[0] for c in CASES])
def test_forward_features_cpu_gpu_agreement(preset, grid, overrides, highest_fp32):
    torch.manual_seed(0)
    cpu = create_model(preset, **overrides).eval()
    gpu = copy.deepcopy(cpu).to(common.DEVICE)
    x = torch.randn(2, 1, *grid)
    ref = cpu.forward_features(x)
    ref.pow(2).mean().backward()
    y = gpu.forward_features(x.to(common.DEVICE))
    y.pow(2).mean().backward()
    assert y.shape == ref.shape
    err = _rel(y.detach().cpu(), ref.detach())
    assert err <= FP32_MAX_REL_ERR, f"{preset}: fp32 max rel err {err:.2e} > {FP32_MAX_REL_ERR}"
    grads = {
        n: _rel(pg.grad.cpu(), pc.grad)
        for (n, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters())
        if pc.grad is not None
    }
    worst = max(grads, key=grads.get)
    assert grads[worst] <= GRAD_MAX_REL_ERR, (
        f"{preset}: gradient of {worst} differs by {grads[worst]:.2e}"
    )
    with torch.no_grad(), torch.autocast(torch.device(common.DEVICE).type, dtype=torch.bfloat16):
        y16 = gpu.forward_features(x.to(common.DEVICE)).float().cpu()
    cos = F.cosine_similarity(y16.flatten().double(), ref.detach().flatten().double(), dim=0).item()
    assert cos >= BF16_MIN_COSINE, f"{preset}: bf16 cosine {cos:.5f} < {BF16_MIN_COSINE}"
