"""Test-only: Lightning's DeepSpeed strategy on CPU (gloo), so the DeepSpeed path of
``fit`` and a real ZeRO checkpoint can be exercised without a GPU. Lightning refuses CPU
in ``setup_environment``/``setup_distributed``; everything else is DeepSpeed's CPU
accelerator. Run as ``python -m tests.training.cpu_deepspeed CONFIG_JSON`` (a fresh process:
DeepSpeed's distributed state is global)."""

from __future__ import annotations

import json
import os
import sys

from lightning.pytorch.strategies import DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(*args, **kwargs)

    @property
    def root_device(self):  # DeepSpeed wants a device index; CPU has none by default
        import torch

        return torch.device("cpu", self.local_rank)

    def setup_environment(self) -> None:  # skip the CUDA-only check
        from lightning.pytorch.strategies.ddp import DDPStrategy

        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:  # skip the GPU index validation
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()


def main(path: str) -> None:
    from swiftlib.training import fit

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    cfg = json.loads(open(path).read())
    res = fit(cfg, strategy_cls=CPUDeepSpeedStrategy)
    print(json.dumps({"best": res.best_checkpoint, "last": res.last_checkpoint, "metrics": res.metrics}))


if __name__ == "__main__":
    main(sys.argv[1])
