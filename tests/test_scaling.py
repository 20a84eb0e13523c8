"""The scaling model (swiftlib.training.scaling) and the scaling benchmark's driver
(benchmarks/bench_scaling.py): communication arithmetic, predictions, hardware checks,
efficiency and the published-format table; the 1 → 2 process run itself is ``slow``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from swiftlib.models import create_model
from swiftlib.training.scaling import PERLMUTTER, Cluster, comm_seconds, model_size, predict

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_scaling", REPO / "benchmarks" / "bench_scaling.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scaling"] = module
    spec.loader.exec_module(module)
    return module


def test_comm_seconds_by_hand():
    nbytes = 200e6  # 100M parameters in bf16
    # 2 Perlmutter nodes = 8 GPUs: NVLink phase 2·3/4·B/(100 GB/s·0.8), NIC phase 2·1/2·B/(4·25
    # GB/s·0.8), latency 2·log2(8)·10 µs
    expected = 2 * 0.75 * nbytes / 80e9 + 2 * 0.5 * nbytes / 80e9 + 2 * 3 * 10e-6
    assert comm_seconds(nbytes, 2) == pytest.approx(expected)
    assert comm_seconds(nbytes, 1, Cluster(gpus_per_node=1)) == 0.0
    # ZeRO-3 moves 1.5× the bytes of an all-reduce
    assert comm_seconds(nbytes, 4, volume=3.0) > 1.45 * comm_seconds(nbytes, 4)
    # the inter-node term saturates: 2(M-1)/M → 2
    assert comm_seconds(nbytes, 256) < 1.1 * comm_seconds(nbytes, 64)


def test_predict_efficiency_limits_and_overlap():
    params, flops = 200e6, 1e12
    rows = predict(params, flops, batch_per_gpu=8, mfu=0.15, nodes=[1, 64], strategies=["ddp"])
    compute = 8 * flops / (312e12 * 0.15)
    assert rows[0]["compute_ms"] == pytest.approx(1e3 * compute)
    assert rows[0]["samples_per_s"] == pytest.approx(
        4 * 8 / (compute + rows[0]["exposed_comm_ms"] / 1e3)
    )
    # communication far below the backward pass: fully hidden with overlap = 1
    hidden = predict(params, flops, 8, 0.15, [64], ["ddp"], overlap=1.0)[0]
    assert hidden["exposed_comm_ms"] == 0.0 and hidden["efficiency"] == pytest.approx(1.0)
    # no overlap: against one GPU, compute / (compute + comm); against one node, the ratio of
    # the two steps
    one, many = predict(params, flops, 8, 0.15, [1, 64], ["ddp"], overlap=0.0)
    assert many["gpu_efficiency"] == pytest.approx(
        many["compute_ms"] / (many["compute_ms"] + many["comm_ms"])
    )
    assert many["efficiency"] == pytest.approx(
        (one["compute_ms"] + one["comm_ms"]) / (many["compute_ms"] + many["comm_ms"])
    )
    # model states: DDP 16 B/parameter everywhere, ZeRO-2 2 + 14/N
    ddp, zero2 = predict(3.2e9, 1e13, 1, 0.15, [2], ["ddp", "zero2"])
    assert ddp["states_gb"] == pytest.approx(51.2) and not ddp["fits"]
    assert zero2["states_gb"] == pytest.approx(3.2 * (2 + 14 / 8)) and zero2["fits"]
    # a 1-sample batch of a 3B-parameter model is communication-bound
    big = predict(3.2e9, 1e13, 1, 0.15, [64], ["zero2"], overlap=0.0)[0]
    assert big["gpu_efficiency"] < 0.5 and big["efficiency"] < 0.75


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mfu": 1.5}, r"mfu=1.5: expected a fraction in \(0, 1\]"),
        ({"overlap": -0.1}, r"overlap=-0.1: expected in \[0, 1\]"),
        ({"strategies": ["fsdp"]}, r"strategies \['fsdp'\]: expected some of"),
        ({"batch_per_gpu": 0}, r"batch_per_gpu=0: expected ≥ 1"),
    ],
)
def test_predict_rejects_bad_input(kwargs, message):
    args = dict(params=1e6, flops_per_sample=1e9, batch_per_gpu=1, mfu=0.1, nodes=[1])
    with pytest.raises(ValueError, match=message):
        predict(**{**args, **kwargs})


def test_cluster_validation():
    with pytest.raises(ValueError, match=r"Cluster.link_efficiency=0: expected in \(0, 1\]"):
        Cluster(link_efficiency=0)
    assert PERLMUTTER.nics_per_node * PERLMUTTER.nic_bandwidth == 100e9


def test_model_size_counts_parameters_and_flops():
    params, flops = model_size("swift_v2_test")
    assert params == sum(
        p.numel() for p in create_model("swift_v2_test", num_classes=0).parameters()
    )
    # the linear layers' share, counted independently with hooks on a real forward: 2 FLOPs per
    # multiply-add forward, twice that backward (input and weight gradients; the patch
    # embedding's input needs none)
    import torch

    # on the meta device, as model_size counts: on CPU the window attention takes q, k, v from
    # slices of the qkv weight (no module call, so no hook), which meta does not
    with torch.device("meta"):
        model = create_model("swift_v2_test", num_classes=0)
    linear = []

    def hook(m, inp, out):
        n = inp[0].numel() // m.in_features * m.in_features * m.out_features
        linear.append((4 if m is model.patch_embed.proj else 6) * n)

    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(hook)
    model.forward_features(torch.zeros(1, 1, 12, 16, 20, 6, device="meta"))
    attention = flops - sum(linear)
    assert 0.3 * sum(linear) < attention < sum(linear), (flops, sum(linear))


def _args(**kw):
    base = dict(
        preset="swift_v2_test",
        backend="auto",
        threads=1,
        strategies=["ddp"],
        modes=["weak", "strong"],
        global_batch=4,
    )
    return SimpleNamespace(**{**base, **kw})


def test_bench_refuses_what_the_hardware_cannot_run(monkeypatch):
    bench = _bench()
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(SystemExit, match=r"--ranks 4 × --threads 1 = 4 CPU threads, but this"):
        bench.check_hardware(_args(), [1, 4])
    with pytest.raises(SystemExit, match=r"--backend nccl needs CUDA GPUs; none found"):
        bench.check_hardware(_args(backend="nccl"), [1])
    with pytest.raises(
        SystemExit, match=r"--global-batch 3 does not split evenly over --ranks \[2\]"
    ):
        bench.check_hardware(_args(global_batch=3), [1, 2])
    assert bench.check_hardware(_args(), [1, 2]) == "gloo"
    # 3.2B parameters × 16 B (DDP's fp32 AdamW states) on each of 2 ranks sharing 23 GB of RAM
    monkeypatch.setattr(bench, "device_memory", lambda gpus: (23e9, "RAM"))
    with pytest.raises(SystemExit, match=r"swift_v2_3b \(3,219 M parameters\) with ddp on 2 rank"):
        bench.check_hardware(_args(preset="swift_v2_3b", modes=["weak"]), [1, 2])


def test_efficiency_and_table():
    bench = _bench()
    row = dict(nodes=1, device="cpu", loadavg=[1.0, 1.0, 1.0], allreduce_gbps=None)
    rows = [
        {**row, "strategy": "zero2", "mode": "weak", "ranks": 1, "batch_per_rank": 2,
         "samples_per_s": 10.0, "step_ms": 200.0, "compute_ms": None, "comm_ms": None},
        {**row, "strategy": "zero2", "mode": "weak", "ranks": 2, "batch_per_rank": 2,
         "samples_per_s": 16.0, "step_ms": 250.0, "compute_ms": None, "comm_ms": None},
    ]  # fmt: skip
    out = bench.add_efficiency(rows)
    assert out[1]["efficiency"] == pytest.approx(0.8)  # 16 / (2 × 10)
    assert out[1]["comm_ms"] == pytest.approx(50.0)  # step − 1-rank step at the same batch
    table = bench.markdown(out)
    assert "| zero2 | weak | 1 | 2 | 2 | 16.00 | 80.0 % | 250 | — | 50 | — | 1.0 |" in table


def test_collected_slurm_rows_are_compared_with_one_node(tmp_path):
    bench = _bench()
    paths = []
    for nodes, sps in ((1, 100.0), (2, 180.0), (4, 300.0)):
        row = {
            "strategy": "ddp", "mode": "weak", "nodes": nodes, "ranks": 4 * nodes,
            "batch_per_rank": 8, "samples_per_s": sps, "step_ms": 320.0, "compute_ms": 300.0,
            "comm_ms": 20.0, "allreduce_gbps": 80.0, "loadavg": [0.5, 0.5, 0.5],
        }  # fmt: skip
        paths.append(tmp_path / f"ddp_weak_{nodes}.json")
        paths[-1].write_text(json.dumps(row))
    md = tmp_path / "scaling.md"
    assert bench.main(["--collect", *map(str, reversed(paths)), "--markdown", str(md)]) == 0
    lines = [ln for ln in md.read_text().splitlines() if ln.startswith("| ddp")]
    assert [ln.split(" | ")[2] for ln in lines] == ["1", "2", "4"]  # sorted by nodes
    assert [ln.split(" | ")[6] for ln in lines] == ["100.0 %", "90.0 %", "75.0 %"]


def test_bench_cli_rejects_bad_arguments():
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.parse(["--ranks", "0", "2"])
    with pytest.raises(SystemExit):
        bench.parse(["--steps", "0"])


@pytest.mark.slow
def test_bench_scaling_runs_1_to_2_processes(tmp_path):
    out = tmp_path / "rows.json"
    cmd = [sys.executable, "benchmarks/bench_scaling.py", "--ranks", "1", "2", "--steps", "2"]
    cmd += ["--warmup", "1", "--modes", "weak", "--strategies", "ddp", "zero2", "--json", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True, timeout=900)
    rows = json.loads(out.read_text())
    assert [(r["strategy"], r["ranks"]) for r in rows] == [
        ("ddp", 1),
        ("ddp", 2),
        ("zero2", 1),
        ("zero2", 2),
    ]
    assert all(r["samples_per_s"] > 0 and r["efficiency"] > 0 for r in rows)
    assert rows[1]["allreduce_gbps"] > 0 and rows[1]["compute_ms"] > 0
