"""Shared pieces of the GPU suite (``pytest -m gpu tests/gpu``): the skip rule, in-memory
windows with a planted signal, a loss recorder and where results are written.

Everything here needs torch, numpy and Lightning only: the suite runs on a bare accelerator
image without monai, nibabel, nilearn, captum, optuna or hdf5plugin, so no test reads a store.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from swiftlib.data.windows import Sample, collate_samples

NO_CUDA = "needs a CUDA device (run the GPU suite there: bash benchmarks/gpu_suite.sh)"

#: ``pytestmark`` of every GPU test module.
GPU_ONLY = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]

#: Where the models run; only a CPU rehearsal of the test bodies changes it.
DEVICE = "cuda"

#: Window grid (D, H, W, T): distinct sizes on every axis, a multiple of the ``*_test``
#: presets' rule (4 spatially, 2 in time); 3 time tokens pad the 2-token windows.
GRID = (16, 20, 12, 6)


def accelerator() -> str:
    return "gpu" if DEVICE == "cuda" else "cpu"


def out_dir() -> Path | None:
    """``$OUT`` (the device machine's result folder) when set."""
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else None


class PlantedWindows(Dataset):
    """``num_unique`` fixed windows ``x: (1, D, H, W, T)`` repeated to ``length`` samples.

    Inside an ellipsoid "brain": smooth spatio-temporal waves plus a little noise and an
    offset of 1 (which the SimMIM decoder learns within a few dozen steps, so the loss falls
    clearly), and for class 1 a raised patch in one corner of the brain (a label the encoder
    can learn); outside it: the in-brain minimum, as in a store window (SimMIM's brain mask).
    """

    def __init__(
        self, num_unique: int = 8, length: int | None = None, grid=GRID, seed: int = 0
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        D, H, W, T = grid
        d, h, w = torch.meshgrid(
            torch.linspace(-1, 1, D),
            torch.linspace(-1, 1, H),
            torch.linspace(-1, 1, W),
            indexing="ij",
        )
        brain = (d**2 + h**2 + w**2) < 0.9  # (D, H, W)
        t = torch.linspace(0, 1, T)
        xs, ys = [], []
        for i in range(num_unique):
            k, phase = (
                torch.rand(3, generator=gen) * 3 + 1,
                torch.rand(1, generator=gen) * 2 * math.pi,
            )
            space = torch.sin(math.pi * (k[0] * d + k[1] * h + k[2] * w))  # (D, H, W)
            x = space[..., None] * torch.cos(2 * math.pi * t + phase)  # (D, H, W, T)
            x = x + 0.1 * torch.randn(x.shape, generator=gen)
            label = i % 2
            if label:
                x[(d > 0) & (h > 0) & (w > 0) & brain] += 1.0
            x = torch.where(brain[..., None], x + 1.0, x[brain].min() + 1.0)
            xs.append(x[None])  # (1, D, H, W, T)
            ys.append(label)
        self.x, self.y = xs, ys
        self.length = length or num_unique

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Sample:
        j = i % len(self.x)
        return Sample(
            x=self.x[j],
            y=torch.tensor(self.y[j]),
            subject_id=f"sub-{j:02d}",
            dataset="planted",
            window_start=0,
        )


def windows_loader(batch_size: int = 4, **kw) -> DataLoader:
    return DataLoader(
        PlantedWindows(**kw), batch_size=batch_size, shuffle=False, collate_fn=collate_samples
    )


class StepRecorder(pl.Callback):
    """Training losses, the device the task ran on, and the dtype of the first Linear's
    output during training (bf16 under ``bf16-mixed`` autocast)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.devices: set[str] = set()
        self.linear_dtypes: set[torch.dtype] = set()
        self._hook = None

    def on_train_start(self, trainer, pl_module) -> None:
        first = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Linear))
        self._hook = first.register_forward_hook(lambda m, i, o: self.linear_dtypes.add(o.dtype))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach().float()))
        self.devices.add(pl_module.device.type)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._hook is not None:
            self._hook.remove()


def tiny_trainer(root: Path, max_steps: int, callbacks=(), **kw) -> pl.Trainer:
    """A bf16-mixed, single-device Trainer without logger, checkpoints or progress bar."""
    settings = dict(
        accelerator=accelerator(),
        devices=1,
        precision="bf16-mixed",
        max_steps=max_steps,
        max_epochs=-1,
        default_root_dir=str(root),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,
    )
    return pl.Trainer(callbacks=list(callbacks), **{**settings, **kw})


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]
