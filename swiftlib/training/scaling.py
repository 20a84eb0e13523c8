"""A model of data-parallel scaling: gradient bytes communicated per step against compute per
step, and the efficiency it predicts on a cluster (default: NERSC Perlmutter's GPU nodes).

Per optimiser step and rank, with ``P`` parameters, ``N`` ranks on ``M`` nodes of ``g`` GPUs:

* **compute**: ``b × F / (peak × MFU)`` — ``b`` samples per rank, ``F`` model FLOPs of one
  sample's forward + backward (counted on the meta device), ``peak`` the GPU's dense bf16
  peak and ``MFU`` the fraction a step achieves (stated, taken from a measurement).
* **communication** (bytes each rank sends, ring/tree collectives, Patarasuk & Yuan 2009):
  DDP all-reduces the gradients, ``2 (N−1)/N × P × bytes_grad``; ZeRO-1 and ZeRO-2
  reduce-scatter the gradients and all-gather the updated (bf16) parameters — the same
  ``2 (N−1)/N`` volume, ZeRO-2 releasing gradient memory as it goes; ZeRO-3 also gathers the
  parameters again for the backward pass, ``3 (N−1)/N``. Hierarchically: inside a node over
  NVLink, between nodes through the node's NICs, which every node's ``g`` GPUs share (NCCL
  runs one ring per NIC), so the inter-node time is ``2 (M−1)/M × P × bytes / (NICs × NIC
  bandwidth × link efficiency)``, plus a latency of ``2 log2(N) × α`` per collective.
* **step** = compute + the part of the communication not hidden behind the backward pass:
  ``max(0, comm − overlap × backward)`` with backward ≈ 2/3 of compute. ``overlap=0`` gives the
  pessimistic bound, ``overlap=1`` the optimistic one.
* **efficiency** at ``M`` nodes = ``samples/s (M) / (M × samples/s (1 node))`` (weak scaling,
  fixed per-GPU batch), the ratio the published SwiFT v2 figures use; ``gpu_efficiency`` is the
  same against one GPU without communication.
* **memory** for model states per GPU (mixed precision, Adam; Rajbhandari et al. 2020): DDP
  keeps fp32 weights, fp32 gradients and two fp32 moments (16 B/parameter); ZeRO-1 keeps bf16
  weights and gradients (4 B) and shards the fp32 master weights and moments (12 B / N);
  ZeRO-2 shards the gradients too (2 + 14 / N B). Activations come on top; a strategy whose
  states alone exceed ``Cluster.gpu_memory`` is marked as not fitting.

:func:`predict` returns one row per (strategy, nodes); :func:`predicted_table` formats them.
Every number the model assumes is a field of :class:`Cluster` or an argument, so a
measurement can replace it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = [
    "Cluster",
    "PERLMUTTER",
    "STRATEGY_VOLUME",
    "model_size",
    "comm_seconds",
    "predict",
    "predicted_table",
    "cluster_dict",
    "preset_predictions",
    "MEASURED_MFU",
    "PREDICT_BATCH",
]

#: collective volume per step in units of ``(N−1)/N × parameter bytes``
STRATEGY_VOLUME = {"ddp": 2.0, "zero1": 2.0, "zero2": 2.0, "zero3": 3.0}
#: model-state bytes per parameter: (replicated, sharded over the ranks)
STRATEGY_STATE_BYTES = {"ddp": (16, 0), "zero1": (4, 12), "zero2": (2, 14), "zero3": (0, 16)}


@dataclass(frozen=True)
class Cluster:
    """A GPU cluster's numbers (defaults: Perlmutter GPU node, 4 × A100-40GB, Slingshot 11)."""

    name: str = "Perlmutter"
    gpus_per_node: int = 4
    peak_flops: float = 312e12  # A100 dense bf16
    nics_per_node: int = 4
    nic_bandwidth: float = 25e9  # bytes/s per NIC and direction (200 Gb/s Slingshot)
    intra_node_bandwidth: float = 100e9  # bytes/s per GPU, NVLink 3 (all-reduce bus bandwidth)
    link_efficiency: float = 0.8  # achieved / nominal for large NCCL collectives
    latency: float = 10e-6  # seconds per collective hop (α)
    gpu_memory: float = 40e9  # bytes (A100-40GB; Perlmutter also has 80 GB nodes)

    def __post_init__(self):
        for name in ("gpus_per_node", "nics_per_node"):
            if getattr(self, name) < 1:
                raise ValueError(f"Cluster.{name}={getattr(self, name)}: expected ≥ 1")
        for name in (
            "peak_flops",
            "nic_bandwidth",
            "intra_node_bandwidth",
            "latency",
            "gpu_memory",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"Cluster.{name}={getattr(self, name)}: expected > 0")
        if not 0 < self.link_efficiency <= 1:
            raise ValueError(f"Cluster.link_efficiency={self.link_efficiency}: expected in (0, 1]")


PERLMUTTER = Cluster()


def model_size(preset: str, img_size: tuple[int, ...] | None = None) -> tuple[int, float]:
    """``(parameters, FLOPs of one sample's forward + backward)`` of encoder ``preset`` at
    ``img_size`` (its own by default), counted on the meta device with the explicit attention
    math (the fused kernels have no FLOP formula on every device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from swiftlib.models import create_model, get_model_config

    grid = tuple(img_size or get_model_config(preset).img_size)
    with torch.device("meta"):
        model = create_model(preset, img_size=grid, num_classes=0)
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        params = sum(p.numel() for p in model.parameters())
        x = torch.empty(1, 1, *grid)
        with FlopCounterMode(display=False) as fc:
            model.forward_features(x).float().pow(2).mean().backward()
    return params, float(fc.get_total_flops())


def comm_seconds(
    num_bytes: float, nodes: int, cluster: Cluster = PERLMUTTER, volume: float = 2.0
) -> float:
    """Seconds one collective pattern of ``volume × (N−1)/N × num_bytes`` takes on ``nodes``
    nodes of ``cluster``: the intra-node (NVLink) and inter-node (NICs shared by the node's
    GPUs) phases of a hierarchical collective, plus latency."""
    g = cluster.gpus_per_node
    ranks = nodes * g
    if ranks == 1:
        return 0.0
    # volume/2 per reduce-scatter + all-gather pair
    intra = (
        volume * (g - 1) / g * num_bytes / (cluster.intra_node_bandwidth * cluster.link_efficiency)
    )
    inter = 0.0
    if nodes > 1:
        node_bw = cluster.nics_per_node * cluster.nic_bandwidth * cluster.link_efficiency
        # after the intra-node reduce-scatter each GPU holds 1/g of the buffer; the g GPUs
        # exchange their shards across the nodes in parallel, sharing the node's NICs
        inter = volume * (nodes - 1) / nodes * num_bytes / node_bw
    latency = volume * math.log2(ranks) * cluster.latency
    return intra + inter + latency


def predict(
    params: int,
    flops_per_sample: float,
    batch_per_gpu: int,
    mfu: float,
    nodes: list[int],
    strategies=("ddp", "zero1", "zero2"),
    cluster: Cluster = PERLMUTTER,
    grad_bytes: int = 2,
    overlap: float = 0.5,
) -> list[dict]:
    """Predicted samples/s and efficiency per strategy and node count (weak scaling at
    ``batch_per_gpu``). ``grad_bytes``: 2 for bf16 gradients (DeepSpeed bf16, DDP with a bf16
    compression hook), 4 for fp32 (DDP under autocast without a hook)."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu={mfu}: expected a fraction in (0, 1]")
    if not 0 <= overlap <= 1:
        raise ValueError(f"overlap={overlap}: expected in [0, 1]")
    if batch_per_gpu < 1:
        raise ValueError(f"batch_per_gpu={batch_per_gpu}: expected ≥ 1")
    unknown = [s for s in strategies if s not in STRATEGY_VOLUME]
    if unknown:
        raise ValueError(f"strategies {unknown}: expected some of {sorted(STRATEGY_VOLUME)}")
    compute = batch_per_gpu * flops_per_sample / (cluster.peak_flops * mfu)
    one_gpu = batch_per_gpu / compute
    rows = []

    def rate(strategy: str, n: int) -> tuple[float, float, float]:
        comm = comm_seconds(params * grad_bytes, n, cluster, STRATEGY_VOLUME[strategy])
        exposed = max(0.0, comm - overlap * (2 / 3) * compute)
        return n * cluster.gpus_per_node * batch_per_gpu / (compute + exposed), comm, exposed

    for strategy in strategies:
        one_node = rate(strategy, 1)[0]
        for n in nodes:
            if n < 1:
                raise ValueError(f"nodes={n}: expected ≥ 1")
            sps, comm, exposed = rate(strategy, n)
            ranks = n * cluster.gpus_per_node
            replicated, sharded = STRATEGY_STATE_BYTES[strategy]
            states = params * (replicated + sharded / ranks)
            rows.append(
                {
                    "strategy": strategy,
                    "nodes": n,
                    "ranks": ranks,
                    "grad_mb": params * grad_bytes / 1e6,
                    "compute_ms": 1e3 * compute,
                    "comm_ms": 1e3 * comm,
                    "exposed_comm_ms": 1e3 * exposed,
                    "samples_per_s": sps,
                    "efficiency": sps / (n * one_node),
                    "gpu_efficiency": sps / (ranks * one_gpu),
                    "states_gb": states / 1e9,
                    "fits": states < cluster.gpu_memory,
                }
            )
    return rows


def predicted_table(rows: list[dict], cluster: Cluster = PERLMUTTER) -> str:
    """Markdown table in the published format (nodes, samples/s, efficiency against 1 node) plus
    the terms behind it; rows whose model states do not fit a GPU say so."""
    lines = [
        f"| strategy | nodes ({cluster.gpus_per_node} GPUs) | samples/s | efficiency | "
        "compute ms | comm ms | exposed comm ms | model states GB/GPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fits = "" if r["fits"] else f" (> {cluster.gpu_memory / 1e9:.0f}: does not fit)"
        lines.append(
            f"| {r['strategy']} | {r['nodes']} | {r['samples_per_s']:,.1f} | "
            f"{100 * r['efficiency']:.1f} % | {r['compute_ms']:.1f} | {r['comm_ms']:.1f} | "
            f"{r['exposed_comm_ms']:.1f} | {r['states_gb']:.1f}{fits} |"
        )
    return "\n".join(lines)


#: Achieved MFU per preset measured on one H200 (benchmarks/RESULTS.md, bf16, eager), used as
#: the stated MFU of the Perlmutter prediction; presets without a measurement take 202m's.
MEASURED_MFU = {"swift_v2_51m": 0.071, "swift_v2_202m": 0.149}
#: samples per A100-40GB assumed for the prediction (202m fitted 104 on the 143 GB H200)
PREDICT_BATCH = {"swift_v2_5m": 16, "swift_v2_51m": 16, "swift_v2_202m": 16, "swift_v2_806m": 4}


def preset_predictions(presets: list[str], nodes: list[int], overlap: float = 0.5) -> str:
    """The model's Perlmutter prediction per preset, as markdown: DDP (fp32 gradients, as torch
    DDP under bf16 autocast), ZeRO-1/2 (bf16 gradients), at :data:`PREDICT_BATCH` samples per
    GPU and :data:`MEASURED_MFU`."""
    out = []
    for preset in presets:
        params, flops = model_size(preset)
        mfu = MEASURED_MFU.get(preset, MEASURED_MFU["swift_v2_202m"])
        batch = PREDICT_BATCH.get(preset, 1)
        rows = predict(params, flops, batch, mfu, nodes, ["ddp"], grad_bytes=4, overlap=overlap)
        rows += predict(params, flops, batch, mfu, nodes, ["zero1", "zero2"], overlap=overlap)
        one_gpu = PERLMUTTER.peak_flops * mfu / flops
        out.append(
            f"**{preset}**: {params / 1e6:,.1f} M parameters, {flops / 1e9:,.0f} GFLOP per "
            f"sample (fwd+bwd), MFU {100 * mfu:.1f} %, {batch} samples per GPU → "
            f"{one_gpu:.1f} samples/s per A100; gradients {4 * params / 1e6:,.0f} MB (fp32, "
            f"DDP) / {2 * params / 1e6:,.0f} MB (bf16, ZeRO); overlap {overlap:g}\n\n"
            + predicted_table(rows)
        )
    return "\n\n".join(out)


def cluster_dict(cluster: Cluster = PERLMUTTER) -> dict:
    return asdict(cluster)
