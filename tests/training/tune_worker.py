"""A tuning worker process for tests: ``python -m tests.training.tune_worker ARGS.json``.

ARGS: ``base`` (fit config dict), ``storage``, ``study_name``, ``study_dir``, ``n_trials``,
``space`` (SearchSpace dict), optional ``barrier`` (files: touch the first, wait for all —
so concurrent workers start together), ``heartbeat_interval``, ``grace_period`` and
``worker_index``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

BARRIER_TIMEOUT_S = 120
POLL_S = 0.1


def main(path: str) -> int:
    args = json.loads(Path(path).read_text())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from swiftlib.training.tune import tune

    barrier = [Path(p) for p in args.get("barrier", [])]
    if barrier:
        barrier[0].touch()
        deadline = time.time() + BARRIER_TIMEOUT_S
        while not all(p.exists() for p in barrier) and time.time() < deadline:
            time.sleep(POLL_S)
    liveness = {k: args[k] for k in ("heartbeat_interval", "grace_period") if k in args}
    s = tune(
        args["base"],
        args["n_trials"],
        storage=args["storage"],
        study_name=args["study_name"],
        study_dir=args["study_dir"],
        space=args["space"],
        evaluate_test=False,
        pruning=False,
        worker_index=args.get("worker_index"),
        **liveness,
    )
    print(json.dumps({"states": s.states}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
