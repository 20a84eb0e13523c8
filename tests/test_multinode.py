"""Multi-node launch rehearsal on one machine: two ranks started as two SLURM "nodes" on
127.0.0.1 (the environment ``srun`` gives each task on Perlmutter: ``SLURM_PROCID``,
``SLURM_NODEID``, ``SLURM_NNODES``, …), each running the pretraining notebook through
``swiftlib run`` with ``num_nodes=2, devices=1, strategy=ddp`` on CPU (gloo). The two kernels
form one DDP run; rank 0 writes the canonical notebook, HTML and results.json, rank 1 its
notebook and status under ``ranks/rank-1/``.

To compare the ranks' final weights, each kernel runs an IPython start-up file (``IPYTHONDIR``)
that adds one callback to every Lightning Trainer: at the end of training it writes a digest
of the model's ``state_dict`` to ``$DIGEST_DIR/rank-<global rank>.txt``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from tests.conftest import notebook_errors, state_digest

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "notebooks" / "02_pretrain" / "01_pretrain_simmim.ipynb"
SWIFTLIB = Path(sys.executable).parent / "swiftlib"

DIGEST_STARTUP = """
import hashlib, os, pathlib
import lightning.pytorch as pl

class _WeightsDigest(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        h = hashlib.sha256()
        state = pl_module.state_dict()
        for name in sorted(state):
            h.update(name.encode())
            h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
        out = pathlib.Path(os.environ["DIGEST_DIR"]) / f"rank-{trainer.global_rank}.txt"
        out.write_text(h.hexdigest())

_init = pl.Trainer.__init__

def _with_digest(self, *args, callbacks=None, **kwargs):
    _init(self, *args, callbacks=[*(callbacks or []), _WeightsDigest()], **kwargs)

pl.Trainer.__init__ = _with_digest
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_run_the_pretraining_notebook_as_one_ddp_job(train_store, tmp_path):
    ipython_dir = tmp_path / "ipython"
    (ipython_dir / "profile_default" / "startup").mkdir(parents=True)
    (ipython_dir / "profile_default" / "startup" / "00-weights-digest.py").write_text(
        DIGEST_STARTUP
    )
    digests = tmp_path / "digests"
    digests.mkdir()
    run_dir = tmp_path / "run"
    params = {
        "store_path": str(train_store.root),
        "splits_dir": str(tmp_path / "splits"),
        "model": "swift_v2_test",
        "model_overrides": "{}",
        "sequence_length": "8",
        "windows_per_subject": "1",
        "batch_size": "4",
        "max_epochs": "2",
        "accelerator": "cpu",
        "devices": "1",
        "num_nodes": "2",
        "strategy": "ddp",
    }
    cmd = [
        str(SWIFTLIB),
        "run",
        str(PRETRAIN),
        "-o",
        str(run_dir),
        "-q",
        *[x for k, v in params.items() for x in ("-p", k, v)],
    ]
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "PMI_"))
        and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    base.update(
        OMP_NUM_THREADS="1",
        IPYTHONDIR=str(ipython_dir),
        DIGEST_DIR=str(digests),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        SLURM_JOB_ID="31337",
        SLURM_JOB_NAME="swiftlib-rehearsal",
        SLURM_NTASKS="2",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_NNODES="2",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NODELIST="127.0.0.1,127.0.0.1",
        SLURM_LOCALID="0",
    )
    t0 = time.time()
    procs = [
        subprocess.Popen(
            cmd,
            env={**base, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    seconds = time.time() - t0
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-3000:] for o in outs)

    # rank 0: the canonical notebook, HTML and results.json; one joint run of two ranks
    doc = json.loads((run_dir / "results.json").read_text())
    assert doc["status"] == "ok" and doc["kind"] == "pretrain", doc.get("error")
    assert doc["ranks"]["world_size"] == 2
    assert doc["parameters"]["num_nodes"] == 2 and doc["parameters"]["devices"] == 1
    assert doc["config"]["trainer"]["num_nodes"] == 2 and doc["config"]["data"]["num_devices"] == 2
    assert doc["metrics"]["val/recon_loss"] > 0 and doc["metrics"]["test/recon_loss"] > 0
    assert (run_dir / PRETRAIN.name).exists() and (
        run_dir / PRETRAIN.with_suffix(".html").name
    ).exists()
    assert notebook_errors(run_dir / PRETRAIN.name) == []

    # rank 1: its executed notebook and status under ranks/, nothing canonical
    rank1 = run_dir / "ranks" / "rank-1"
    assert sorted(p.name for p in rank1.iterdir()) == [PRETRAIN.name, "status.json"]
    assert notebook_errors(rank1 / PRETRAIN.name) == []
    # Lightning: the second of two processes
    assert "MEMBER: 2/2" in (rank1 / PRETRAIN.name).read_text()
    status = json.loads((rank1 / "status.json").read_text())
    assert status["status"] == "ok" and status["rank"] == 1 and status["world_size"] == 2

    # DDP: both ranks ended training with the same weights, the ones in rank 0's last.ckpt
    per_rank = {p.name: p.read_text() for p in digests.iterdir()}
    assert sorted(per_rank) == ["rank-0.txt", "rank-1.txt"]
    assert (
        per_rank["rank-0.txt"]
        == per_rank["rank-1.txt"]
        == state_digest(run_dir / "checkpoints" / "last.ckpt")
    )
    print(f"two-node rehearsal: {seconds:.1f} s")


def test_torchrun_ranks_are_recognised_by_the_runner(tmp_path, monkeypatch):
    """``torchrun`` sets RANK/WORLD_SIZE per worker (no SLURM variables): rank 1 writes under
    ``ranks/rank-1/`` with a status.json, rank 0 the canonical results.json with the world size."""
    from swiftlib.runner import launch_rank, run_notebook

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir: str = ""  # run directory')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            'from swiftlib import notebook as nb\nnb.save_results(run_dir, "data", '
            'metrics={"toy/ok": 1.0})'
        ),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "01_data" / "01_toy.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, str(path))
    for var in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        assert launch_rank() == (rank, 2)
        out = run_notebook(
            path, run_dir=tmp_path / "run", progress=False, log_output=False, html=False
        )
        assert out.status == "ok", out.error
    status = json.loads((tmp_path / "run" / "ranks" / "rank-1" / "status.json").read_text())
    assert status["status"] == "ok" and status["rank"] == 1
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        doc["status"] == "ok"
        and doc["ranks"]["world_size"] == 2
        and doc["metrics"] == {"toy/ok": 1.0}
    )
