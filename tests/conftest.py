"""Shared fixtures: a small synthetic cohort with distinct axis sizes (built once per session)."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

# 8 mm keeps the cohort tiny; (20, 24, 22) gives a distinct size on every axis.
SYNTH_KW = dict(num_subjects=12, seed=3, voxel_size=8.0, grid=(20, 24, 22), num_frames=40, tr=1.0)


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory):
    """``(store, export_dir, config)``: 12 subjects at 8 mm, 40 frames, 4 exported as NIfTI."""
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = tmp_path_factory.mktemp("synth")
    cfg = SyntheticConfig(**SYNTH_KW)
    store = make_synthetic_cohort(
        root / "store", config=cfg, export_nifti=root / "bids", export_subjects=4, progress=False
    )
    return store, root / "bids", cfg


@pytest.fixture(scope="session")
def synth_store(synth_cohort):
    return synth_cohort[0]


# A training-sized cohort: grid divisible by the *_test presets' rule (multiples of 4),
# distinct axes, 24 frames so 8-frame windows give 3 windows per subject.
TRAIN_KW = dict(num_subjects=12, seed=11, voxel_size=8.0, grid=(20, 24, 28), num_frames=24, tr=1.0)


@pytest.fixture(scope="session")
def train_store(tmp_path_factory):
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = tmp_path_factory.mktemp("train")
    return make_synthetic_cohort(root / "store", config=SyntheticConfig(**TRAIN_KW), progress=False)


def tiny_fit_config(
    store, run_dir, kind="finetune", task=None, trainer=None, data=None, **kw
) -> dict:
    """A seconds-long fit() configuration on ``store`` (for tests)."""
    return {
        "kind": kind,
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {
            "store_path": str(store.root),
            "sequence_length": 8,
            "batch_size": 4,
            "num_workers": 0,
            "splits_dir": str(run_dir.parent / "splits"),
            **(data or {}),
        },
        "task": {
            "model": "swift_v2_test",
            **({"label": "sex"} if kind == "finetune" else {}),
            **(task or {}),
        },
        "trainer": {
            "max_epochs": 1,
            "enable_progress_bar": False,
            "accelerator": "cpu",
            **(trainer or {}),
        },
        **kw,
    }


class KillAt(pl.Callback):
    """Stop a run once ``step`` optimiser steps are done, before that step's checkpoint is
    written — a job killed there, which continues from the step before."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"killed at step {self.step}")


def kill_and_resume(store, tmp_path, kill_at: int = 8, **common):
    """The exact-resume standard: ``fit`` a tiny config (``common``) uninterrupted, and again
    killed at step ``kill_at`` (before that step's last.ckpt) then resumed from last.ckpt.
    Checks the resumed run continues from step ``kill_at - 1`` and that both runs end with
    bit-equal weights; returns ``(uninterrupted, resumed)`` results to compare metrics."""
    import torch

    from swiftlib.training import TrainingError, fit

    full = fit(tiny_fit_config(store, tmp_path / "full", **common))
    cfg = tiny_fit_config(store, tmp_path / "cut", **common)
    with pytest.raises(TrainingError, match=f"killed at step {kill_at}"):
        fit(cfg, callbacks=[KillAt(kill_at)])
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == kill_at - 1
    resumed = fit({**cfg, "resume_from": str(last)})
    a = torch.load(full.last_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    return full, resumed


def state_digest(path) -> str:
    """sha256 over a checkpoint's ``state_dict`` (names and tensor bytes, in name order)."""
    import hashlib

    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def notebook_errors(path) -> list[str]:
    """The ``ename: evalue`` of every error output in an executed notebook."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
