"""Mixed-store (multi-cohort) SimMIM pretraining killed mid-epoch and resumed from last.ckpt
continues exactly: the same batches in the same order, the same final weights and metrics as
an uninterrupted run with the same seed (the single-store standard of ``test_fit.py``)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from swiftlib.training import TrainingError, fit
from tests.conftest import tiny_fit_config

GRID = (20, 24, 28)  # the *_test presets need multiples of 4; distinct sizes on every axis
VOXEL = 8.0
# three cohorts of unequal size and scan length: 8-frame windows give 3, 2 and 4 per scan
COHORTS = {"ukb": (6, 24), "abcd": (4, 16), "hcp": (4, 32)}  # name: (participants, frames)


def _write_store(root, dataset: str, num_subjects: int, num_frames: int, seed: int):
    from swiftlib.data.geometry import StoreGeometry
    from swiftlib.data.store import StoreWriter

    rng = np.random.default_rng(seed)
    aff = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    aff[:3, 3] = [-80.0, -112.0, -72.0]
    writer = StoreWriter(root, grid=GRID, voxel_size=VOXEL, affine=aff, normalisation="zscore_global")
    geom = StoreGeometry.build(GRID, VOXEL, aff, source_shape=GRID, source_affine=aff)
    mask = np.zeros(GRID, dtype=bool)
    mask[3:17, 4:20, 4:24] = True
    rows = []
    for i in range(num_subjects):
        sid = f"sub-{dataset}{i:02d}"
        bold = rng.standard_normal((*GRID, num_frames)).astype(np.float16)  # (D, H, W, T)
        writer.write_subject(sid, bold, mask, geom, tr=0.8, norm_stats={"mean": 0.0, "std": 1.0})
        rows.append({"subject_id": sid, "participant_id": sid, "dataset": dataset, "site": "site0",
                     "sex": i % 2, "age": 50.0 + i})
    return writer.finalize(pd.DataFrame(rows), labels={"sex": {"task": "classification", "num_classes": 2},
                                                       "age": {"task": "regression"}})


@pytest.fixture(scope="module")
def cohort_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    return [_write_store(root / name, name, n, t, seed) for seed, (name, (n, t)) in enumerate(COHORTS.items())]


class _Record(pl.Callback):
    """The windows of every optimiser step, as (dataset, subject, start) triples."""

    def __init__(self):
        self.steps: list[list[tuple]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append(list(zip(batch.dataset, batch.subject_id, batch.window_start.tolist(), strict=True)))


class _Kill(RuntimeError):
    pass


class _KillAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise _Kill(f"killed at step {self.step}")


def test_mixed_pretraining_killed_mid_epoch_and_resumed_matches_an_uninterrupted_run(cohort_stores, tmp_path):
    data = {"store_path": [str(s.root) for s in cohort_stores], "split_fractions": [0.5, 0.25, 0.25]}
    # validate only at the end, so best.ckpt (which the val/test metrics are computed from) is
    # the final state, not an epoch-1 checkpoint both runs share
    trainer = {"max_epochs": 2, "checkpoint_every_n_steps": 1, "check_val_every_n_epoch": 2}
    common = dict(kind="pretrain", data=data, trainer=trainer)
    seen_full, seen_cut, seen_resumed = _Record(), _Record(), _Record()
    full = fit(tiny_fit_config(cohort_stores[0], tmp_path / "full", **common), callbacks=[seen_full])
    # train windows: ukb 3 x 3 + abcd 2 x 2 + hcp 2 x 4 = 21 draws per epoch -> 6 steps of 4 (last 1)
    assert len(seen_full.steps) == 12 and len(seen_full.steps[5]) == 1
    assert {d for step in seen_full.steps for d, _, _ in step} == set(COHORTS)  # every cohort is drawn

    cfg = tiny_fit_config(cohort_stores[0], tmp_path / "cut", **common)
    with pytest.raises(TrainingError, match="killed at step 8"):
        fit(cfg, callbacks=[seen_cut, _KillAt(8)])  # in the middle of epoch 2
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 7  # the kill pre-empts the step-8 save
    resumed = fit({**cfg, "resume_from": str(last)}, callbacks=[seen_resumed])

    # the resumed run takes exactly the batches the killed run had not finished, in order
    assert seen_cut.steps[:7] + seen_resumed.steps == seen_full.steps
    # bit-equal, not approximately: on noise SimMIM learns little, and a run resumed from the
    # wrong batches ends within 1e-6 of the right val/recon_loss. (train/loss_epoch is left out:
    # a resumed run averages only the steps it ran.)
    for k in ("val/recon_loss", "val/recon_ratio", "test/recon_loss", "test/recon_ratio", "train/loss_step"):
        assert resumed.metrics[k] == full.metrics[k], k
    a = torch.load(full.last_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
