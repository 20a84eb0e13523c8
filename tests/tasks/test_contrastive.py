"""ContrastiveTask: NT-Xent between two windows of a subject — the loss falls and a subject's
windows end closer together than other subjects' on the synthetic cohort; fine-tuning starts
from its encoder; a killed run resumes exactly; `swiftlib info` and the interpretation loader
read the checkpoint."""

from __future__ import annotations

import copy
import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from swiftlib.data.pairs import PairDataset, collate_pairs
from swiftlib.data.windows import WindowDataset
from swiftlib.models.heads import nt_xent_loss
from swiftlib.tasks.contrastive import ContrastiveConfig, ContrastiveTask, distance_ratio
from swiftlib.training import FitConfig, fit
from swiftlib.utils.config import ConfigError
from tests.conftest import kill_and_resume, tiny_fit_config

L = 8  # frames per window


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """16 subjects × 40 frames (5 windows each), split 70/15/15."""
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    cfg = SyntheticConfig(
        num_subjects=16, seed=11, voxel_size=8.0, grid=(20, 24, 28), num_frames=40, tr=1.0
    )
    return make_synthetic_cohort(
        tmp_path_factory.mktemp("contrastive") / "store", config=cfg, progress=False
    )


class _InitialWeights(pl.Callback):
    """Keeps the task's weights as training starts (the 'before' of a run)."""

    def on_train_start(self, trainer, pl_module):
        self.state = copy.deepcopy(pl_module.state_dict())


def _task(config: dict, state: dict) -> ContrastiveTask:
    task = ContrastiveTask({**config, "init_from": None})
    task.load_state_dict(state)
    return task.eval()


@torch.no_grad()
def _embeddings(task, store, ids):
    """Encoder embeddings of every back-to-back window of ``ids``: (N, C) and the subject of
    each."""
    ds = WindowDataset(store, ids, sequence_length=L, mode="eval")
    x = torch.stack([ds[i].x for i in range(len(ds))])  # (N, 1, D, H, W, T)
    return task.embed(x), np.asarray(ds.index["subject_id"])


def _same_over_other(e, sids) -> float:
    """Mean distance between windows of one subject / between windows of different subjects."""
    d = torch.cdist(e.double(), e.double())
    same = torch.as_tensor(sids[:, None] == sids[None, :])
    return float(d[same & ~torch.eye(len(sids), dtype=torch.bool)].mean() / d[~same].mean())


@torch.no_grad()
def _pair_loss(task, store, ids) -> float:
    """NT-Xent of fixed pairs of ``ids``, in batches of one pair per subject."""
    pairs = PairDataset(
        WindowDataset(store, ids, sequence_length=L, mode="eval"), pairs_per_subject=2, seed=7
    )
    losses = []
    for k in range(0, len(pairs), len(ids)):
        b = collate_pairs([pairs[i] for i in range(k, k + len(ids))])
        losses.append(float(nt_xent_loss(task(b.x1), task(b.x2), task.cfg.temperature)))
    return float(np.mean(losses))


def test_nt_xent_leaves_same_subject_rows_out_of_the_negatives():
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    plain = nt_xent_loss(z1, z2, 0.5)
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.5, groups=["a", "b", "c", "d"]), plain)
    # rows 0 and 2 are one subject: each anchor of that subject loses two negatives
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / 0.5
    drop = torch.eye(8, dtype=torch.bool)
    for i, j in ((0, 2), (0, 6), (4, 2), (4, 6)):
        drop[i, j] = drop[j, i] = True
    want = torch.nn.functional.cross_entropy(
        sim.masked_fill(drop, float("-inf")), torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    )
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.5, groups=["s1", "s2", "s1", "s3"]), want)
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.5, groups=torch.tensor([1, 2, 1, 3])), want)
    with pytest.raises(ValueError, match="groups has 3 entries; expected one per sample"):
        nt_xent_loss(z1, z2, groups=["a", "b", "c"])


def test_distance_ratio():
    e1 = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    e2 = torch.tensor([[1.0, 0.0], [11.0, 0.0]])
    # pairs 1 apart; other-subject windows 9, 10, 10, 11 apart
    assert float(distance_ratio(e1, e2, ["a", "b"])) == pytest.approx(1 / 10)
    assert distance_ratio(e1, e2, ["a", "a"]) is None


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"temperature": 0.0}, "temperature=0.0: expected > 0"),
        ({"proj_dim": 0}, "proj_dim=0: expected a positive width"),
    ],
)
def test_config_errors(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        ContrastiveConfig(**kw)


def test_fit_config_for_contrastive_runs(tmp_path):
    cfg = FitConfig.from_dict(
        {
            "kind": "contrastive",
            "data": {"label": "sex", "batch_size": 4},
            "task": {"temperature": 0.2},
        }
    )
    assert isinstance(cfg.task, ContrastiveConfig) and cfg.data.pairs and cfg.data.label is None
    assert not FitConfig.from_dict({"kind": "pretrain", "data": {"pairs": True}}).data.pairs
    with pytest.raises(ConfigError, match="did you mean 'contrastive'"):
        FitConfig.from_dict({"kind": "contrastiv"})
    with pytest.raises(ValueError, match="at least 2 per device"):
        FitConfig.from_dict(
            {"kind": "contrastive", "data": {"batch_size": 2}, "trainer": {"devices": 2}}
        )


def test_contrastive_pretraining_pulls_a_subjects_windows_together(cohort, tmp_path):
    """The science check: on held-out subjects, the NT-Xent of fixed pairs falls and the
    windows of one subject end much closer together than windows of different subjects."""
    initial = _InitialWeights()
    res = fit(
        tiny_fit_config(cohort, tmp_path / "c", kind="contrastive", trainer={"max_epochs": 2}),
        callbacks=[initial],
    )
    assert res.status == "ok" and res.monitor == "val/nt_xent"
    for key in (
        "val/nt_xent",
        "val/top1",
        "val/distance_ratio",
        "test/nt_xent",
        "test/distance_ratio",
        "train/loss_epoch",
    ):
        assert np.isfinite(res.metrics[key]), key
    doc = json.loads((tmp_path / "c" / "results.json").read_text())
    assert (
        doc["kind"] == "pretrain"
        and doc["parameters"]["kind"] == "contrastive"
        and doc["monitor"] == "val/nt_xent"
    )

    config = torch.load(res.best_checkpoint, weights_only=True)["hyper_parameters"]["config"]
    before = _task(config, initial.state)
    after = ContrastiveTask.load_from_checkpoint(res.best_checkpoint).eval()
    splits = json.loads(next((tmp_path / "splits").rglob("*.json")).read_text())
    held_out = sorted(splits["val"] + splits["test"])
    models = {"before": before, "after": after}
    train_loss = {
        name: _pair_loss(t, cohort, sorted(splits["train"])) for name, t in models.items()
    }
    loss = {name: _pair_loss(t, cohort, held_out) for name, t in models.items()}
    ratio = {
        name: _same_over_other(*_embeddings(t, cohort, held_out)) for name, t in models.items()
    }
    # measured: NT-Xent of fixed pairs, 11 training subjects 2.84 -> 2.24 (chance log 21 = 3.04),
    # 5 held-out subjects 1.95 -> 1.51 (chance log 9 = 2.20); held-out same/other distance
    # 0.83 -> 0.20
    assert train_loss["after"] < 0.85 * train_loss["before"], train_loss
    assert loss["after"] < 0.85 * loss["before"], loss
    assert ratio["after"] < 0.5 * ratio["before"] and ratio["after"] < 0.4, ratio


def test_finetune_starts_from_the_contrastive_encoder_and_info_describes_it(train_store, tmp_path):
    from swiftlib.info import describe
    from swiftlib.tasks.common import CheckpointError, load_encoder_weights
    from swiftlib.tasks.finetune import FinetuneTask

    pre = fit(
        tiny_fit_config(train_store, tmp_path / "c", kind="contrastive", trainer={"max_steps": 2})
    )
    ckpt = torch.load(pre.last_checkpoint, weights_only=True)
    meta = ckpt["swiftlib"]
    assert (
        meta["kind"] == "contrastive"
        and meta["encoder_prefix"] == "model."
        and meta["contract"]["grid"] == [20, 24, 28]
    )
    assert any(k.startswith("projection.") for k in ckpt["state_dict"])
    info = describe(pre.last_checkpoint, full=True)
    assert (
        info["swiftlib"]["kind"] == "contrastive" and info["swiftlib"]["model"] == "swift_v2_test"
    )
    assert info["hyper_parameters"]["config"]["temperature"] == 0.1

    task = FinetuneTask(
        {"model": "swift_v2_test", "init_from": pre.last_checkpoint, "contract": meta["contract"]}
    )
    assert task.init_report["kind"] == "contrastive"
    encoder = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    own = task.model.state_dict()
    assert encoder and all(torch.equal(own[k], v) for k, v in encoder.items())
    # interpretation reads its encoder for embeddings
    from swiftlib.interpret import extract_embeddings
    from swiftlib.interpret.inference import load_inference_model

    inference = load_inference_model(pre.last_checkpoint)
    assert inference.kind == "contrastive"
    assert all(torch.equal(inference.encoder.state_dict()[k], v) for k, v in encoder.items())
    emb = extract_embeddings(
        pre.last_checkpoint,
        train_store,
        subjects=train_store.subject_ids[:2],
        level="subject",
        progress=False,
    )
    assert len(emb) == 2
    ft = fit(
        tiny_fit_config(
            train_store,
            tmp_path / "ft",
            task={"init_from": pre.last_checkpoint},
            trainer={"max_steps": 2},
        )
    )
    assert ft.status == "ok" and np.isfinite(ft.metrics["test/loss"])
    # pretraining continues from it too; another preset is refused by name
    from swiftlib.models import create_model

    report = load_encoder_weights(
        create_model("swift_v2_test", num_classes=0), pre.last_checkpoint, "swift_v2_test"
    )
    assert report["kind"] == "contrastive" and report["loaded"]
    with pytest.raises(CheckpointError, match="made for model 'swift_v2_test'"):
        load_encoder_weights(
            create_model("swift_v1_test", num_classes=0), pre.last_checkpoint, "swift_v1_test"
        )
    with pytest.raises(
        CheckpointError, match="is a contrastive checkpoint .* this run is 'finetune'"
    ):
        fit(tiny_fit_config(train_store, tmp_path / "r", resume_from=pre.last_checkpoint))


def test_killed_mid_epoch_and_resumed_matches_an_uninterrupted_run(train_store, tmp_path):
    # 6 steps per epoch: killed in the middle of epoch 2; weights checked bit-equal inside
    full, resumed = kill_and_resume(
        train_store,
        tmp_path,
        kind="contrastive",
        trainer={"max_epochs": 2, "checkpoint_every_n_steps": 1},
        task={"model_overrides": {"drop_path_rate": 0.2}},
    )
    for k in ("val/nt_xent", "val/distance_ratio", "test/nt_xent"):
        assert resumed.metrics[k] == pytest.approx(full.metrics[k], abs=1e-6), k
