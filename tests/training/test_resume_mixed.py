"""Mixed-store (multi-cohort) SimMIM pretraining killed mid-epoch and resumed from last.ckpt
continues exactly: the same batches in the same order, the same final weights and metrics as
an uninterrupted run with the same seed (the single-store standard of ``test_fit.py``)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from swiftlib.training import TrainingError, fit
from tests.conftest import KillAt, tiny_fit_config
from tests.data.conftest import build_store

GRID = (20, 24, 28)  # the *_test presets need multiples of 4; distinct sizes on every axis
# three cohorts of unequal size and scan length: 8-frame windows give 3, 2 and 4 per scan
COHORTS = {"ukb": (6, 24), "abcd": (4, 16), "hcp": (4, 32)}  # name: (participants, frames)


@pytest.fixture(scope="module")
def cohort_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    return [
        build_store(
            root / name,
            frames=[t] * n,
            seed=seed,
            dataset=name,
            prefix=f"sub-{name}",
            nan_age=(),
            second_session=False,
            grid=GRID,
        )[0]
        for seed, (name, (n, t)) in enumerate(COHORTS.items())
    ]


class _Record(pl.Callback):
    """The windows of every optimiser step, as (dataset, subject, start) triples."""

    def __init__(self):
        self.steps: list[list[tuple]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append(
            list(zip(batch.dataset, batch.subject_id, batch.window_start.tolist(), strict=True))
        )


def test_mixed_pretraining_killed_mid_epoch_and_resumed_matches_an_uninterrupted_run(
    cohort_stores, tmp_path
):
    data = {
        "store_path": [str(s.root) for s in cohort_stores],
        "split_fractions": [0.5, 0.25, 0.25],
    }
    # validate only at the end, so best.ckpt (which the val/test metrics are computed from) is
    # the final state, not an epoch-1 checkpoint both runs share
    trainer = {"max_epochs": 2, "checkpoint_every_n_steps": 1, "check_val_every_n_epoch": 2}
    common = dict(kind="pretrain", data=data, trainer=trainer)
    seen_full, seen_cut, seen_resumed = _Record(), _Record(), _Record()
    full = fit(
        tiny_fit_config(cohort_stores[0], tmp_path / "full", **common), callbacks=[seen_full]
    )
    # train windows: ukb 3 x 3 + abcd 2 x 2 + hcp 2 x 4 = 21 draws per epoch -> 6 steps of 4
    # (last 1)
    assert len(seen_full.steps) == 12 and len(seen_full.steps[5]) == 1
    # every cohort is drawn
    assert {d for step in seen_full.steps for d, _, _ in step} == set(COHORTS)

    cfg = tiny_fit_config(cohort_stores[0], tmp_path / "cut", **common)
    with pytest.raises(TrainingError, match="killed at step 8"):
        fit(cfg, callbacks=[seen_cut, KillAt(8)])  # in the middle of epoch 2
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    # the kill pre-empts the step-8 save
    assert torch.load(last, weights_only=True)["global_step"] == 7
    resumed = fit({**cfg, "resume_from": str(last)}, callbacks=[seen_resumed])

    # the resumed run takes exactly the batches the killed run had not finished, in order
    assert seen_cut.steps[:7] + seen_resumed.steps == seen_full.steps
    # bit-equal, not approximately: on noise SimMIM learns little, and a run resumed from the
    # wrong batches ends within 1e-6 of the right val/recon_loss. (train/loss_epoch is left out:
    # a resumed run averages only the steps it ran.)
    for k in (
        "val/recon_loss",
        "val/recon_ratio",
        "test/recon_loss",
        "test/recon_ratio",
        "train/loss_step",
    ):
        assert resumed.metrics[k] == full.metrics[k], k
    a = torch.load(full.last_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
