"""Test-only: ``fit`` with a DeepSpeed strategy on CPU (``accelerator: cpu`` selects
swiftlib's CPU DeepSpeed strategy: gloo, DeepSpeed's CPU accelerator), so the DeepSpeed path
and real ZeRO checkpoints are exercised without a GPU. Run as
``python -m tests.training.cpu_deepspeed CONFIG_JSON [CONFIG_JSON ...]``
(a fresh process: DeepSpeed's distributed state is global): each config is one ``fit``, in
order, so a pretraining run and the fine-tuning run that starts from it share one start-up.
A config may carry ``"_kill_at": N`` (test-only, removed before ``fit``): the run is stopped
at training step N, as a pre-empted job would be. Prints one JSON line per run."""

from __future__ import annotations

import json
import os
import sys

from tests.conftest import KillAt


def main(paths: list[str]) -> None:
    from swiftlib.training import TrainingError, fit

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    for path in paths:
        cfg = json.loads(open(path).read())
        kill_at = cfg.pop("_kill_at", None)
        try:
            res = fit(cfg, callbacks=[KillAt(kill_at)] if kill_at else ())
        except TrainingError as e:
            print(json.dumps({"status": "failed", "error": str(e)}), flush=True)
            continue
        print(
            json.dumps(
                {
                    "status": res.status,
                    "best": res.best_checkpoint,
                    "last": res.last_checkpoint,
                    "metrics": res.metrics,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
