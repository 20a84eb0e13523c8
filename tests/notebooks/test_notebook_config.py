"""swiftlib.notebook_config: the one mapping from a notebook's flat parameters to a FitConfig."""

from __future__ import annotations

import dataclasses
import math

import pytest

from swiftlib import notebook as nb
from swiftlib.notebook_config import DESTINATIONS, fit_config, number_or_word
from swiftlib.utils.config import ConfigError

FINETUNE = dict(
    seed=3,
    store_path="data/demo/store_synthetic",
    splits_dir="data/demo/splits",
    label="age",
    task="regression",
    mode="unfreeze",
    unfreeze_fraction=0.25,
    few_shot_n=0,
    init_from="",
    model="swift_v2_test",
    model_overrides={"depths": [1, 1, 1, 1]},
    head="mlp",
    head_dropout=0.1,
    sequence_length=8,
    windows_per_subject=0,
    eval_stride_between_seq=2.0,
    batch_size=4,
    lr=1e-3,
    layer_decay=1.0,
    weight_decay=0.05,
    warmup_fraction=0.2,
    max_epochs=2,
    max_steps=-1,
    accelerator="cpu",
    devices=2,
    num_nodes=1,
    strategy="ddp",
    precision="32-true",
    accumulate_grad_batches=2,
    num_workers=0,
    pin_memory=False,
    checkpoint_every_n_steps=0,
    enable_progress_bar=False,
)


def test_every_parameter_lands_where_the_config_names_it(tmp_path):
    cfg = fit_config("finetune", tmp_path / "run", **FINETUNE)
    assert (cfg.kind, cfg.run_dir) == ("finetune", str(tmp_path / "run"))
    assert cfg.seed == 3 and cfg.task.seed == 3
    d, t, o, tr = cfg.data, cfg.task, cfg.task.optim, cfg.trainer
    assert (d.sequence_length, d.batch_size, d.eval_stride_between_seq) == (8, 4, 2.0)
    assert (d.num_workers, d.pin_memory) == (0, False)
    assert (t.label, t.task, t.mode, t.unfreeze_fraction) == ("age", "regression", "unfreeze", 0.25)
    assert (t.head, t.head_dropout) == ("mlp", 0.1)
    assert (t.model, t.model_overrides) == ("swift_v2_test", {"depths": [1, 1, 1, 1]})
    assert (o.lr, o.weight_decay, o.warmup_fraction) == (1e-3, 0.05, 0.2)
    assert (tr.max_epochs, tr.devices, tr.strategy, tr.accumulate_grad_batches) == (2, 2, "ddp", 2)
    assert tr.enable_progress_bar is False
    assert d.label == "age" and d.num_devices == 2  # FitConfig keeps data and trainer consistent


def test_unset_spellings_become_none_in_one_place(tmp_path):
    cfg = fit_config("finetune", tmp_path, **FINETUNE)
    assert cfg.data.windows_per_subject is None and cfg.data.few_shot_n is None
    assert cfg.task.init_from is None and cfg.task.optim.layer_decay is None
    assert cfg.trainer.checkpoint_every_n_steps is None
    given = {
        "windows_per_subject": 2,
        "few_shot_n": 5,
        "layer_decay": 0.75,
        "checkpoint_every_n_steps": 50,
        "init_from": "/ckpt/best.ckpt",
    }
    cfg = fit_config("finetune", tmp_path, **{**FINETUNE, **given})
    assert (cfg.data.windows_per_subject, cfg.data.few_shot_n) == (2, 5)
    assert cfg.task.optim.layer_decay == 0.75
    assert (cfg.trainer.checkpoint_every_n_steps, cfg.task.init_from) == (50, "/ckpt/best.ckpt")
    # unfreeze_fraction is only read in mode unfreeze (the notebook keeps its default otherwise)
    full = fit_config("finetune", tmp_path, **{**FINETUNE, "mode": "full"})
    assert full.task.unfreeze_fraction is None


def test_paths_resolve_like_every_notebook_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH", str(tmp_path))
    cfg = fit_config(
        "pretrain",
        tmp_path,
        store_path="data/a, $SCRATCH/b",
        splits_dir="data/splits",
        init_from="runs/pre/best.ckpt",
    )
    assert cfg.data.store_path == (nb.resolve("data/a"), str(tmp_path / "b"))  # mixed stores
    assert cfg.data.splits_dir == nb.resolve("data/splits")
    assert cfg.task.init_from == nb.resolve("runs/pre/best.ckpt")
    one = fit_config("pretrain", tmp_path, store_path="data/a")
    assert one.data.store_path == nb.resolve("data/a")


def test_parameters_not_passed_keep_the_config_defaults(tmp_path):
    from swiftlib.training import FitConfig

    default = FitConfig.from_dict({"kind": "pretrain", "run_dir": str(tmp_path)})
    assert fit_config("pretrain", tmp_path).to_dict() == default.to_dict()
    cfg = fit_config(
        "pretrain", tmp_path, mask_ratio=0.6, mask_strategy="tube", dataset_weights="proportional"
    )
    assert (cfg.task.mask_ratio, cfg.task.mask_strategy) == (0.6, "tube")
    assert cfg.data.dataset_weights == "proportional"
    assert cfg.task.optim.lr == default.task.optim.lr  # the pretraining default, not fine-tuning's
    cfg = fit_config("pretrain", tmp_path, weight_decay=0.1)
    assert (cfg.task.optim.lr, cfg.task.optim.weight_decay) == (default.task.optim.lr, 0.1)


def test_unknown_parameters_are_refused_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"'weight_decy' \(did you mean 'weight_decay'\?\)"):
        fit_config("finetune", tmp_path, weight_decy=0.1)
    with pytest.raises(ConfigError, match=r"'mask_ratio' only applies to kind 'pretrain'"):
        fit_config("finetune", tmp_path, mask_ratio=0.5)
    with pytest.raises(ConfigError, match=r"'label', 'mode' only apply to kind 'finetune'"):
        fit_config("pretrain", tmp_path, label="sex", mode="full")
    with pytest.raises(ConfigError, match=r"kind='contrastiv': expected one of"):
        fit_config("contrastiv", tmp_path)
    with pytest.raises(ConfigError, match=r"'temperature' only applies to kind 'contrastive'"):
        fit_config("pretrain", tmp_path, temperature=0.1)


def test_contrastive_parameters_land_in_the_task_and_the_pairs(tmp_path):
    cfg = fit_config(
        "contrastive",
        tmp_path,
        temperature=0.2,
        proj_dim=64,
        mask_same_subject=False,
        pair_min_separation=-1,
        lr=2e-3,
    )
    assert cfg.kind == "contrastive" and cfg.data.pairs
    assert (cfg.task.temperature, cfg.task.proj_dim, cfg.task.mask_same_subject) == (0.2, 64, False)
    assert cfg.data.pair_min_separation is None  # -1: a window's span, SwiFT v1's rule
    assert cfg.task.optim.lr == 2e-3 and cfg.task.optim.weight_decay == 0.01  # its own defaults
    assert fit_config("contrastive", tmp_path, pair_min_separation=0).data.pair_min_separation == 0


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("batch_size", "8", r"fit_config\.batch_size='8' \(str\): expected an integer"),
        ("lr", "1e-3", r"fit_config\.lr='1e-3' \(str\): expected a number"),
        ("pin_memory", 1, r"fit_config\.pin_memory=1 \(int\): expected true or false"),
        ("model_overrides", [1], r"fit_config\.model_overrides=\[1\] \(list\): expected a mapping"),
        ("max_epochs", 2.5, r"fit_config\.max_epochs=2\.5 \(float\): expected an integer"),
    ],
)
def test_ill_typed_parameters_name_the_parameter_and_the_type(tmp_path, name, value, expected):
    with pytest.raises(ConfigError, match=expected):
        fit_config("finetune", tmp_path, **{name: value})


def test_inconsistent_settings_fail_in_the_config(tmp_path):
    with pytest.raises(ValueError, match="mask_ratio"):
        fit_config("pretrain", tmp_path, mask_ratio=0.95)
    with pytest.raises(ConfigError, match="strategy"):
        fit_config("finetune", tmp_path, strategy="fsdp")


def test_every_parameter_has_a_destination():
    from swiftlib.notebook_config import _PARAMETERS

    names = {f.name for cls in _PARAMETERS.values() for f in dataclasses.fields(cls)}
    assert names == set(DESTINATIONS)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0.0),
        ("0.0", 0.0),
        ("-1.5", -1.5),
        ("1e-3", 1e-3),
        ("2E+1", 20.0),
        ("background", "background"),
        ("temporal_mean", "temporal_mean"),
        ("nan", "nan"),
        ("inf", "inf"),
    ],
)
def test_number_or_word(text, expected):
    value = number_or_word(text)
    assert value == expected and type(value) is type(expected)
    assert not (isinstance(value, float) and math.isnan(value))


def test_mup_sets_both_switches_and_template_mismatch_reaches_the_task(tmp_path):
    cfg = fit_config(
        "finetune",
        tmp_path,
        **{**FINETUNE, "task": "auto", "mup": True, "template_mismatch": "error"},
    )
    assert cfg.task.optim.mup is True
    assert cfg.task.model_overrides == {"depths": [1, 1, 1, 1], "mup": True}
    assert cfg.task.template_mismatch == "error" and cfg.task.task == "auto"
    plain = fit_config("finetune", tmp_path, **FINETUNE)
    assert plain.task.optim.mup is False and "mup" not in plain.task.model_overrides
    with pytest.raises(ConfigError, match="template_mismatch"):
        fit_config("finetune", tmp_path, **{**FINETUNE, "template_mismatch": "maybe"})
    with pytest.raises(ConfigError, match="template_mismatch"):
        fit_config("pretrain", tmp_path, template_mismatch="warn")
