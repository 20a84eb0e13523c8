"""Data-parallel scaling of SwiFT v2 training: throughput (samples/s), time per step split into
compute and communication, and strong / weak scaling efficiency against the number of ranks,
for DDP and DeepSpeed ZeRO-1 / ZeRO-2.

One step = forward + backward + AdamW step of encoder ``--preset`` with a 2-class head on
random data of the preset's input size (the data pipeline is left out on purpose; the loader has
its own benchmark). Per configuration:

* ``step_ms``: median step of the slowest rank (the ranks wait for each other);
* ``compute_ms``: DDP only, the same step inside ``no_sync()`` (no gradient all-reduce), so
  ``comm_ms = step_ms − compute_ms`` is the communication the backward pass did not hide;
  for ZeRO (no ``no_sync`` under ZeRO-2) ``comm_ms`` is ``step_ms`` minus the 1-rank step at
  the same per-rank batch (communication plus waiting);
* ``allreduce_gbps``: an all-reduce of one gradient-sized buffer on its own (bus bandwidth,
  ``2 (N−1)/N × bytes / s``) — the bandwidth the scaling model needs;
* efficiency: ``samples/s (N) / (N × samples/s (1))`` — weak scaling keeps the per-rank batch
  (``--batch-per-rank``), strong scaling the global batch (``--global-batch``).

Here (CPU): ``python benchmarks/bench_scaling.py --ranks 1 2`` starts 1 and then 2 local
processes per configuration (gloo, one thread each). On a GPU node the same command runs one
process per GPU with NCCL. On several nodes ``slurm/scaling.sbatch`` runs the ``--worker``
mode under ``srun`` for 1, 2, 4, … nodes and ``--collect`` writes the table (the script lives in
``slurm/bench/`` so that the notebook-job checks on ``slurm/*.sbatch`` do not apply to it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("ddp", "zero1", "zero2")
MODES = ("weak", "strong")
log = logging.getLogger("bench_scaling")


class HardwareError(SystemExit):
    """A configuration this machine cannot run (exit status 2, message on stderr)."""

    def __init__(self, msg: str):
        super().__init__(f"bench_scaling: {msg}")


# ------------------------------------------------------------------------------------------
# worker: one rank
# ------------------------------------------------------------------------------------------


def _env_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun/this script's variables or SLURM's."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env["SLURM_LOCALID"])
    return 0, 1, 0


def _timed(fn, steps: int, sync) -> list[float]:
    out = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def worker(args) -> dict:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from swiftlib.models import create_model, get_model_config

    rank, world, local = _env_rank()
    cuda = torch.cuda.is_available() and args.backend != "gloo"
    backend = "nccl" if cuda else "gloo"
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29512")
    dist.init_process_group(
        backend, rank=rank, world_size=world, device_id=device if cuda else None
    )
    torch.manual_seed(args.seed)
    img = tuple(args.img_size or get_model_config(args.preset).img_size)
    model = create_model(args.preset, img_size=img, num_classes=2, drop_path_rate=0.0).to(device)
    params = sum(p.numel() for p in model.parameters())
    b = args.batch_per_rank
    gen = torch.Generator().manual_seed(args.seed + rank)
    x = torch.randn(b, 1, *img, generator=gen).to(device)  # (B, 1, D, H, W, T)
    y = torch.randint(0, 2, (b,), generator=gen).to(device)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cuda
        else torch.autocast("cpu", enabled=False)
    )
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    compute = None
    if args.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[local] if cuda else None)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=cuda)

        def step(sync_grads: bool = True):
            ctx = net.no_sync() if not sync_grads else torch.enable_grad()
            with ctx:
                with amp:
                    loss = F.cross_entropy(net(x).float(), y)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        grad_dtype = torch.float32
    else:
        import deepspeed

        stage = int(args.strategy[-1])
        cfg = {
            "train_micro_batch_size_per_gpu": b,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {
                "stage": stage,
                "overlap_comm": cuda,
                "contiguous_gradients": True,
            },
            "bf16": {"enabled": cuda},
            "zero_allow_untested_optimizer": True,
        }
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=opt, config=cfg, dist_init_required=False
        )
        xin = x.to(torch.bfloat16) if cuda else x

        def step(sync_grads: bool = True):
            loss = F.cross_entropy(engine(xin).float(), y)
            engine.backward(loss)
            engine.step()

        grad_dtype = torch.bfloat16 if cuda else torch.float32
    for _ in range(args.warmup):
        step()
    times = _timed(step, args.steps, sync)
    if args.strategy == "ddp":
        compute = _timed(lambda: step(False), args.steps, sync)
    # a gradient-sized all-reduce on its own
    buf = torch.ones(params, dtype=grad_dtype, device=device)
    dist.barrier()
    ar = _timed(lambda: dist.all_reduce(buf), 3, sync)
    stats = torch.tensor(
        [
            statistics.median(times),
            statistics.median(compute) if compute else 0.0,
            statistics.median(ar),
        ],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    step_s, compute_s, ar_s = stats.tolist()
    nbytes = params * buf.element_size()
    row = {
        "strategy": args.strategy,
        "ranks": world,
        "nodes": int(os.environ.get("SLURM_STEP_NUM_NODES", os.environ.get("SLURM_NNODES", 1))),
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({args.threads} thread)",
        "backend": backend,
        "preset": args.preset,
        "img_size": list(img),
        "params": params,
        "batch_per_rank": b,
        "global_batch": b * world,
        "step_ms": 1e3 * step_s,
        "compute_ms": 1e3 * compute_s if compute else None,
        "comm_ms": 1e3 * (step_s - compute_s) if compute else None,
        "samples_per_s": b * world / step_s,
        "grad_mb": nbytes / 1e6,
        "allreduce_ms": 1e3 * ar_s,
        "allreduce_gbps": (2 * (world - 1) / world * nbytes / ar_s / 1e9) if world > 1 else None,
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "mode": args.mode,
    }
    dist.destroy_process_group()
    return row


# ------------------------------------------------------------------------------------------
# driver: local launches, checks, tables
# ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_hardware(args, ranks: list[int]) -> str:
    """Refuse configurations this machine cannot run; returns the backend to use."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if gpus else "gloo"
    if backend == "nccl" and not gpus:
        raise HardwareError("--backend nccl needs CUDA GPUs; none found (use gloo on CPU)")
    most = max(ranks)
    if backend == "nccl" and most > gpus:
        raise HardwareError(
            f"--ranks {most} needs {most} GPUs on this node, found {gpus}; more ranks than "
            "GPUs on one node: run slurm/scaling.sbatch across nodes"
        )
    cores = os.cpu_count() or 1
    if backend == "gloo" and most * args.threads > cores:
        raise HardwareError(
            f"--ranks {most} × --threads {args.threads} = {most * args.threads} CPU threads, "
            f"but this machine has {cores} cores; oversubscribed ranks measure the scheduler, "
            f"not the scaling (use --ranks up to {cores // args.threads})"
        )
    check_memory(args, most, gpus if backend == "nccl" else 0)
    if any(s.startswith("zero") for s in args.strategies):
        try:
            import deepspeed  # noqa: F401
        except ImportError as err:
            raise HardwareError(
                f"--strategies {' '.join(args.strategies)} needs DeepSpeed, which does not import "
                f"here ({err}); install it or use --strategies ddp"
            ) from err
    if args.global_batch is not None and "strong" in args.modes:
        bad = [n for n in ranks if args.global_batch % n]
        if bad:
            raise HardwareError(
                f"--global-batch {args.global_batch} does not split evenly over --ranks {bad} "
                "(strong scaling keeps the global batch; choose a multiple of every rank count)"
            )
    return backend


def device_memory(gpus: int) -> tuple[float, str]:
    """(bytes one rank can use, what they are): a GPU's memory, or this machine's RAM shared by
    the local ranks."""
    import torch

    if gpus:
        return float(torch.cuda.get_device_properties(0).total_memory), "GPU memory"
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "RAM"


def check_memory(args, ranks: int, gpus: int) -> None:
    """Refuse a strategy whose model states alone (fp32 AdamW: the scaling model's bytes per
    parameter) exceed what a rank has; activations come on top."""
    import torch

    from swiftlib.models import create_model
    from swiftlib.training.scaling import STRATEGY_STATE_BYTES

    with torch.device("meta"):
        params = sum(p.numel() for p in create_model(args.preset, num_classes=2).parameters())
    available, what = device_memory(gpus)
    share = 1 if gpus else ranks  # local CPU ranks share the machine's RAM
    for strategy in args.strategies:
        replicated, sharded = STRATEGY_STATE_BYTES[strategy]
        need = params * (replicated + sharded / ranks) * share
        if need > available:
            raise HardwareError(
                f"{args.preset} ({params / 1e6:,.0f} M parameters) with {strategy} on {ranks} "
                f"rank(s) needs {need / 1e9:.1f} GB of model states per "
                f"{'GPU' if gpus else 'machine'} before activations; {what} here is "
                f"{available / 1e9:.1f} GB — use a smaller preset, ZeRO-2, or more ranks"
            )


def _worker_argv(args, strategy: str, batch: int, mode: str, out: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--strategy", strategy]
    argv += ["--preset", args.preset, "--batch-per-rank", str(batch), "--mode", mode]
    argv += [
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    argv += ["--backend", args.backend, "--seed", str(args.seed), "--out", str(out)]
    if args.img_size:
        argv += ["--img-size", *map(str, args.img_size)]
    return argv


def launch(args, strategy: str, n: int, batch: int, mode: str) -> dict:
    """Start ``n`` local ranks of one configuration; rank 0's row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        port = str(_free_port())
        procs = []
        for r in range(n):
            env = {
                **os.environ,
                "RANK": str(r),
                "WORLD_SIZE": str(n),
                "LOCAL_RANK": str(r),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "OMP_NUM_THREADS": str(args.threads),
                "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            }
            procs.append(
                subprocess.Popen(
                    _worker_argv(args, strategy, batch, mode, out),
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        logs = [p.communicate(timeout=args.timeout)[0] for p in procs]
        failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode]
        if failed:
            tail = "\n".join(logs[failed[0][0]].splitlines()[-15:])
            raise RuntimeError(
                f"{strategy} with {n} ranks: rank {failed[0][0]} exited {failed[0][1]}:\n{tail}"
            )
        return json.loads(out.read_text())


def add_efficiency(rows: list[dict]) -> list[dict]:
    """``efficiency = samples/s ÷ (ranks / base ranks × samples/s of the base)`` within each
    (strategy, mode), the base being its smallest run — 1 rank locally, 1 node (4 GPUs) in
    the SLURM table, as published; for ZeRO the communication estimate ``step − 1-rank step``
    at equal per-rank batch where a 1-rank run exists."""
    for r in rows:
        group = [q for q in rows if q["strategy"] == r["strategy"] and q["mode"] == r["mode"]]
        base = min(group, key=lambda q: q["ranks"])
        r["efficiency"] = r["samples_per_s"] * base["ranks"] / (r["ranks"] * base["samples_per_s"])
        r["efficiency_base_ranks"] = base["ranks"]
        same_b = [
            q
            for q in rows
            if q["strategy"] == r["strategy"]
            and q["ranks"] == 1
            and q["batch_per_rank"] == r["batch_per_rank"]
        ]
        if r["comm_ms"] is None and same_b:
            r["comm_ms"] = r["step_ms"] - same_b[0]["step_ms"]
            r["comm_from"] = "step − 1-rank step"
    return rows


def model_check(rows: list[dict]) -> str:
    """The scaling model against the measurement: for each multi-rank row, the predicted step is
    the 1-rank step at the same per-rank batch plus the measured gradient-sized all-reduce,
    fully exposed (on CPU the collective needs the cores the backward pass is using) or fully
    hidden — the measured efficiency should fall between the two."""
    lines = [
        "| strategy | mode | ranks | measured efficiency | model, comm exposed | "
        "model, comm hidden |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        one = [
            q
            for q in rows
            if q["strategy"] == r["strategy"]
            and q["ranks"] == 1
            and q["batch_per_rank"] == r["batch_per_rank"]
        ]
        base = [q for q in rows if q["strategy"] == r["strategy"] and q["mode"] == r["mode"]]
        base = [q for q in base if q["ranks"] == 1]
        if r["ranks"] == 1 or not one or not base or r.get("allreduce_ms") is None:
            continue
        ref = base[0]["samples_per_s"] * r["ranks"]
        exposed = r["global_batch"] / (1e-3 * (one[0]["step_ms"] + r["allreduce_ms"])) / ref
        hidden = r["global_batch"] / (1e-3 * one[0]["step_ms"]) / ref
        lines.append(
            f"| {r['strategy']} | {r['mode']} | {r['ranks']} | {100 * r['efficiency']:.1f} % | "
            f"{100 * exposed:.1f} % | {100 * hidden:.1f} % |"
        )
    return "\n".join(lines)


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(rows: list[dict]) -> str:
    """The published format (nodes, samples/s, efficiency) first, then the split."""
    head = (
        "| strategy | mode | nodes | ranks | batch/rank | samples/s | efficiency | step ms | "
        "compute ms | comm ms | all-reduce GB/s (bus) | load (1 min) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        eff = None if r.get("efficiency") is None else 100 * r["efficiency"]
        lines.append(
            f"| {r['strategy']} | {r['mode']} | {r['nodes']} | {r['ranks']} | "
            f"{r['batch_per_rank']} | "
            f"{r['samples_per_s']:.2f} | {_fmt(eff, '.1f')} % | {r['step_ms']:.0f} | "
            f"{_fmt(r['compute_ms'], '.0f')} | {_fmt(r['comm_ms'], '.0f')} | "
            f"{_fmt(r['allreduce_gbps'], '.2f')} | {r['loadavg'][0]:.1f} |"
        )
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="local rank counts")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--preset", default="swift_v2_test", help="encoder preset")
    ap.add_argument("--img-size", type=int, nargs=4, help="input D H W T (default: the preset's)")
    ap.add_argument("--batch-per-rank", type=int, default=2, help="weak scaling: samples per rank")
    ap.add_argument(
        "--global-batch", type=int, help="strong scaling: global batch (default: 2 × max ranks)"
    )
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    ap.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--markdown", help="write the table here")
    # worker / SLURM mode
    ap.add_argument(
        "--worker", action="store_true", help="run one rank (under srun or this driver)"
    )
    ap.add_argument("--strategy", choices=STRATEGIES, default="ddp")
    ap.add_argument("--mode", choices=MODES, default="weak")
    ap.add_argument("--out", help="worker: rank 0 writes its row here")
    ap.add_argument("--collect", nargs="+", help="rows written by --worker runs → one table")
    ap.add_argument(
        "--predict",
        nargs="+",
        metavar="PRESET",
        help="print the scaling model's Perlmutter prediction for these presets and exit",
    )
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 16, 64, 256])
    ap.add_argument("--overlap", type=float, default=0.5, help="model: hidden comm fraction")
    args = ap.parse_args(argv)
    for name in ("steps", "threads", "batch_per_rank"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected ≥ 1")
    if any(n < 1 for n in args.ranks):
        ap.error(f"--ranks {args.ranks}: expected positive rank counts")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        row = worker(args)
        if _env_rank()[0] == 0 and args.out:
            from swiftlib.utils.io import atomic_write_json

            atomic_write_json(args.out, row)
        return 0
    if args.predict:
        from swiftlib.training.scaling import preset_predictions

        text = preset_predictions(args.predict, args.nodes, args.overlap)
        print(text)
        if args.markdown:
            from swiftlib.utils.io import atomic_write_text

            atomic_write_text(args.markdown, text + "\n")
        return 0
    if args.collect:
        rows = add_efficiency([json.loads(Path(p).read_text()) for p in args.collect])
        rows.sort(key=lambda r: (r["strategy"], r["mode"], r["nodes"], r["ranks"]))
    else:
        ranks = sorted(set(args.ranks))
        if args.global_batch is None:
            args.global_batch = args.batch_per_rank * max(ranks)
        args.backend = check_hardware(args, ranks)
        rows = []
        for strategy in args.strategies:
            for mode in args.modes:
                for n in ranks:
                    batch = args.batch_per_rank if mode == "weak" else args.global_batch // n
                    log.info("%s %s: %d rank(s), batch %d per rank", strategy, mode, n, batch)
                    rows.append(launch(args, strategy, n, batch, mode))
        rows = add_efficiency(rows)
    table = markdown(rows)
    if not args.collect:
        table += "\n\nScaling model check (1-rank step + measured all-reduce):\n\n"
        table += model_check(rows)
    print(table)
    if args.json:
        from swiftlib.utils.io import atomic_write_json

        atomic_write_json(args.json, rows)
    if args.markdown:
        from swiftlib.utils.io import atomic_write_text

        atomic_write_text(args.markdown, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
