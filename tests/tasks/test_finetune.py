import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score

from swiftlib.data.windows import Batch
from swiftlib.tasks.finetune import (
    FinetuneConfig,
    FinetuneTask,
    subject_metrics,
    subject_predictions,
)


def _batch(B=4, y=None, grid=(20, 24, 28), T=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, *grid, T, generator=g)
    y = torch.tensor([0, 1, 0, 1][:B], dtype=torch.float32) if y is None else y
    return Batch(
        x, y, [f"sub-{i}" for i in range(B)], ["synthetic"] * B, torch.zeros(B, dtype=torch.long)
    )


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    task = FinetuneTask(
        FinetuneConfig(model="swift_v2_test", optim={"lr": 3e-3, "weight_decay": 0.0})
    )
    batch = _batch()
    opt = torch.optim.AdamW(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = task._loss(task(batch.x), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_linear_probe_freezes_the_encoder_and_keeps_it_in_eval():
    task = FinetuneTask(FinetuneConfig(model="swift_v2_test", mode="linear_probe"))
    assert not any(p.requires_grad for p in task.model.parameters())
    assert all(p.requires_grad for p in task.head.parameters())
    task.train()
    assert task.training and not task.model.training and task.head.training


def test_unfreeze_fraction_trains_the_top_block_groups():
    from swiftlib.models import group_parameters

    task = FinetuneTask(
        FinetuneConfig(model="swift_v2_test", mode="unfreeze", unfreeze_fraction=0.2)
    )
    groups = [g for g in group_parameters(task.model)[1:] if g]
    k = int(np.ceil(0.2 * len(groups)))
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable == {n for g in groups[-k:] for n in g}
    assert not any(n.startswith("patch_embed") for n in trainable)
    task2 = FinetuneTask(FinetuneConfig(model="swift_v2_test", mode="unfreeze", unfreeze_last_k=2))
    assert {n for n, p in task2.model.named_parameters() if p.requires_grad} == {
        n for g in groups[-2:] for n in g
    }
    with pytest.raises(ValueError, match="unfreeze_last_k=999"):
        FinetuneTask(FinetuneConfig(model="swift_v2_test", mode="unfreeze", unfreeze_last_k=999))


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"mode": "unfreeze"}, "exactly one of unfreeze_fraction"),
        ({"mode": "unfreeze", "unfreeze_fraction": 0.2, "unfreeze_last_k": 1}, "exactly one"),
        ({"mode": "unfreeze", "unfreeze_fraction": 1.5}, "unfreeze_fraction=1.5"),
        ({"mode": "unfreeze", "unfreeze_last_k": 0}, "unfreeze_last_k=0"),
        ({"mode": "full", "unfreeze_fraction": 0.2}, "only apply to mode='unfreeze'"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
        ({"target_std": 0.0}, "target_std=0.0"),
        ({"template_mismatch": "warnn"}, "template_mismatch='warnn': expected one of"),
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        FinetuneConfig(**kw)


def test_config_from_dict_rejects_unknown_and_wrong_types():
    with pytest.raises(ValueError, match="did you mean 'label_smoothing'"):
        FinetuneConfig.from_dict({"label_smooth": 0.1})
    with pytest.raises(TypeError, match="mode"):
        FinetuneConfig.from_dict({"mode": "frozen"})


def _rows(cfg, scores, sids, starts, targets):
    return [
        (
            sids,
            torch.tensor(starts),
            torch.tensor(scores, dtype=torch.float32),
            torch.tensor(targets, dtype=torch.float32),
        )
    ]


def test_subject_predictions_average_windows_and_drop_padded_duplicates():
    cfg = FinetuneConfig(task="classification", num_classes=2)
    # the last row duplicates ("a", 0): a distributed sampler's padding
    sids = ["a", "a", "b", "b", "a"]
    starts = [0, 8, 0, 8, 0]
    scores = [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6], [0.9, 0.1]]
    df = subject_predictions(_rows(cfg, scores, sids, starts, [0, 0, 1, 1, 0]), cfg)
    assert df["subject_id"].tolist() == ["a", "b"] and df["num_windows"].tolist() == [2, 2]
    assert np.allclose(df["p1"], [0.3, 0.7]) and df["pred"].tolist() == [0, 1]


def test_classification_metrics_match_sklearn():
    cfg = FinetuneConfig(task="classification", num_classes=2)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    p1 = np.clip(0.3 * y + rng.random(30) * 0.7, 0, 1)
    scores = np.stack([1 - p1, p1], 1)
    df = subject_predictions(_rows(cfg, scores, [f"s{i}" for i in range(30)], [0] * 30, y), cfg)
    m = subject_metrics(df, cfg)
    order = np.argsort([f"s{i}" for i in range(30)])
    assert m["auroc"] == pytest.approx(roc_auc_score(y[order], p1[order]), abs=1e-6)
    assert m["balanced_acc"] == pytest.approx(
        balanced_accuracy_score(y[order], (p1[order] > 0.5).astype(int)), abs=1e-6
    )
    assert m["num_subjects"] == 30
    one_class = subject_metrics(df[df["target"] == 1], cfg)
    assert np.isnan(one_class["auroc"])


def test_regression_metrics_are_on_the_original_scale():
    cfg = FinetuneConfig(task="regression", target_mean=60.0, target_std=10.0)
    rng = np.random.default_rng(1)
    y = rng.uniform(45, 80, 20)
    pred = y + rng.normal(0, 3, 20)
    scores = ((pred - 60.0) / 10.0)[:, None]
    sids = [f"s{i:02d}" for i in range(20)]
    df = subject_predictions(_rows(cfg, scores, sids, [0] * 20, y), cfg)
    m = subject_metrics(df, cfg)
    assert np.allclose(df["pred"], pred, atol=1e-4)
    assert m["r2"] == pytest.approx(r2_score(y, pred), abs=1e-4)
    assert m["mae"] == pytest.approx(np.abs(y - pred).mean(), abs=1e-3)
    assert m["pearson"] == pytest.approx(np.corrcoef(y, pred)[0, 1], abs=1e-4)


def test_regression_loss_uses_the_standardised_target():
    task = FinetuneTask(
        FinetuneConfig(model="swift_v2_test", task="regression", target_mean=60.0, target_std=10.0)
    )
    out = torch.tensor([[0.5], [-1.0]])
    y = torch.tensor([65.0, 50.0])
    assert task._loss(out, y).item() == pytest.approx(0.0, abs=1e-6)


def test_task_auto_takes_the_type_the_store_declares():
    cfg = FinetuneConfig(label="age", task="auto")
    resolved = cfg.for_label("regression", where="store /data/ukb")
    assert resolved.task == "regression" and resolved.num_outputs == 1 and cfg.task == "auto"
    dx = FinetuneConfig(label="dx", task="auto").for_label("classification", num_classes=3)
    assert (dx.task, dx.num_classes, dx.num_outputs) == ("classification", 3, 3)
    same = FinetuneConfig(label="sex").for_label("classification", num_classes=2)
    assert same == FinetuneConfig(label="sex")
    assert FinetuneConfig.from_dict({"task": "auto"}).task == "auto"
    with pytest.raises(ValueError, match="task='auto' is not resolved"):
        FinetuneTask(FinetuneConfig(model="swift_v2_test", task="auto"))


def test_task_mismatch_names_the_notebook_parameters():
    cfg = FinetuneConfig(label="age", task="classification")
    with pytest.raises(ValueError) as e:
        cfg.for_label("regression", where="store /data/ukb")
    msg = str(e.value)
    assert msg.startswith(
        "task='classification' but label 'age' is declared 'regression' in store /data/ukb; "
        "set task='regression' (or task='auto'"
    )
    assert "task.task" not in msg


def test_template_mismatch_setting_reaches_the_contract_check(tmp_path):
    import warnings

    from swiftlib.tasks.common import CHECKPOINT_KEY, ContractError, TemplateMismatchWarning
    from tests.tasks.test_common import CONTRACT, _pretrain_ckpt

    path, _ = _pretrain_ckpt(tmp_path, contract={**CONTRACT, "template": "MNI152NLin6Asym"})
    data = {**CONTRACT, "template": "MNI152NLin2009cAsym"}

    def build(policy):
        kw = {} if policy is None else {"template_mismatch": policy}
        return FinetuneTask(
            FinetuneConfig(model="swift_v2_test", init_from=str(path), contract=data, **kw)
        )

    with pytest.warns(TemplateMismatchWarning, match="'MNI152NLin6Asym'.*'MNI152NLin2009cAsym'"):
        build(None)  # the default: warn
    with pytest.raises(ContractError, match="template: checkpoint trained on 'MNI152NLin6Asym'"):
        build("error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = build("ignore")
    ckpt: dict = {}
    task.on_save_checkpoint(ckpt)
    assert ckpt[CHECKPOINT_KEY]["template_mismatch"] == "ignore"
    # saved with the task's config, so evaluate/init_from of this run know the policy
    assert task.hparams["config"]["template_mismatch"] == "ignore"
