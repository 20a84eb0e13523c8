"""Registry, overrides, checkpoint loading, padding helper, and every *_test preset."""

from __future__ import annotations

import argparse

import pytest
import torch

import swiftlib
from swiftlib.models import (
    SwiFTv1Config,
    create_model,
    fit_padding,
    get_model_config,
    list_models,
    register_model,
)
from swiftlib.models.swift_v1 import SwiFTv1

from .conftest import input_for

TEST_PRESETS = list_models("*_test")


def test_list_models_and_families_have_test_presets():
    names = list_models()
    assert names == sorted(names)
    for family in (
        "swift_v1",
        "swift_v2",
        "swift_v2_factorized",
        "simmim_swift_v1",
        "simmim_swift_v2",
    ):
        assert f"{family}_test" in names
    assert "swift_v1_paper" in names
    assert set(list_models("swift_v2_*")) <= set(names)
    assert all(n.startswith("swift_v2_") for n in list_models("swift_v2_*"))


def test_package_level_lazy_forwarding():
    assert swiftlib.create_model is create_model
    assert swiftlib.list_models() == list_models()


def test_unknown_model_did_you_mean():
    with pytest.raises(
        ValueError, match=r"unknown model 'swift_v1_papr' \(did you mean 'swift_v1_paper'"
    ):
        create_model("swift_v1_papr")


def test_unknown_option_did_you_mean():
    with pytest.raises(
        TypeError, match=r"unknown option 'embed_dims'.*did you mean 'embed_dim'.*Valid options"
    ):
        create_model("swift_v1_test", embed_dims=24)


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("embed_dim", "36", "expected an integer"),
        ("embed_dim", True, "expected an integer"),
        ("qkv_bias", 1, "expected true or false"),
        ("mlp_ratio", "4", "expected a number"),
        ("depths", {"a": 1}, "expected a tuple"),
    ],
)
def test_override_type_errors(field, value, expected):
    with pytest.raises(TypeError, match=rf"SwiFTv1Config.{field}=.*: {expected}"):
        get_model_config("swift_v1_test", **{field: value})


def test_override_type_errors_str_and_dict():
    with pytest.raises(TypeError, match="SwiFTv2Config.attention=3 .*expected a string"):
        get_model_config("swift_v2_test", attention=3)
    with pytest.raises(TypeError, match=r"encoder_overrides=\[1\].*expected a mapping"):
        get_model_config("simmim_swift_v2_test", encoder_overrides=[1])


def test_overrides_applied_and_lists_accepted():
    cfg = get_model_config("swift_v1_test", depths=[2, 2], mlp_ratio=2)
    assert cfg.depths == (2, 2) and cfg.mlp_ratio == 2.0
    assert create_model("swift_v1_test", embed_dim=24).num_features == 48


def test_register_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_model("swift_v1_test", SwiFTv1, SwiFTv1Config())
    with pytest.raises(TypeError, match="must be a dataclass instance"):
        register_model("x_new", SwiFTv1, {"embed_dim": 3})


def test_fit_padding_helper():
    assert fit_padding((64, 64, 48, 20), "swift_v2_51m") == (32, 32, 0, 0)
    assert fit_padding((64, 64, 48, 20), get_model_config("swift_v2_51m")) == (32, 32, 0, 0)
    assert fit_padding((90, 96, 80, 20), "swift_v1_paper") == (6, 0, 16, 0)
    model = create_model("swift_v2_test")
    assert fit_padding((11, 16, 17, 5), model) == (1, 0, 3, 1)
    assert fit_padding((12, 16, 20, 6), create_model("simmim_swift_v2_test")) == (0, 0, 0, 0)
    with pytest.raises(TypeError, match="fit_padding needs an encoder"):
        fit_padding((1, 1, 1, 1), 3.0)


def test_bad_grid_error_states_rule_and_padding():
    with torch.device("meta"):
        model = create_model("swift_v2_51m")
        with pytest.raises(
            ValueError,
            match=r"D divisible by 48.*T divisible by 2.*Pad by \(D, H, W, T\) = \(32, 32, 0, 0\)",
        ):
            model(torch.empty(1, 1, 64, 64, 48, 20))
    assert (
        model.input_rule()
        == "D divisible by 48, H divisible by 48, W divisible by 48, T divisible by 2"
    )


def test_create_model_loads_checkpoint(tmp_path):
    src = create_model("swift_v2_test")
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = create_model("swift_v2_test", checkpoint_path=path)
    for (n, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("swift_v2_test", checkpoint_path=tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"hyper_parameters": argparse.Namespace(lr=1e-3)}, bad)  # as old Lightning ckpts
    with pytest.raises(RuntimeError, match="weights_only=True"):
        create_model("swift_v2_test", checkpoint_path=bad)


@pytest.mark.parametrize("name", TEST_PRESETS)
def test_every_test_preset_forward_backward_finite(name):
    model = create_model(name)
    model.train()
    x = input_for(model, batch_size=2)
    out = model(x)
    loss = out.loss if hasattr(out, "loss") else out.float().pow(2).mean()
    assert torch.isfinite(loss)
    loss.backward()
    # SimMIM does not use the encoder's final norm (only forward_head does)
    grads = [p.grad for n, p in model.named_parameters() if not n.startswith("encoder.norm.")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
