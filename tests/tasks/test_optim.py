import math

import pytest
from torch import nn

import swiftlib
from swiftlib.tasks.optim import OptimConfig, build_optimizer, param_groups, warmup_cosine


def test_no_weight_decay_on_norms_biases_and_position_tables():
    model = swiftlib.create_model("swift_v2_test")
    groups = param_groups(model, OptimConfig(weight_decay=0.1), encoder=model)
    wd = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert wd, "no parameters grouped"
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name.rsplit(".", 1)[-1] in ("pos_embed", "time_embed", "gamma"):
            assert wd[name] == 0.0, name
        else:
            assert wd[name] == 0.1, name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layer_decay_scales_by_depth():
    model = swiftlib.create_model("swift_v2_test")
    groups = param_groups(model, OptimConfig(layer_decay=0.5), encoder=model)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    stem = [v for n, v in scale.items() if n.startswith("patch_embed")]
    top = [v for n, v in scale.items() if n.startswith("norm")]
    assert max(stem) < min(top) and max(top) == 1.0
    depth = len({g["lr_scale"] for g in groups})
    assert min(stem) == pytest.approx(0.5 ** (depth - 1))


def test_frozen_model_is_an_error():
    m = nn.Linear(3, 2)
    m.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(m, OptimConfig())


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)
    m = nn.Linear(4, 2)
    opt, sched = build_optimizer(
        param_groups(m, OptimConfig(lr=1.0, warmup_fraction=0.25)),
        OptimConfig(lr=1.0, warmup_fraction=0.25),
        8,
    )
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    assert lrs[:2] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert lrs[-1] < 0.2 and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert sched["interval"] == "step"


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"lr": 0}, "lr=0"),
        ({"weight_decay": -1}, "weight_decay=-1"),
        ({"layer_decay": 1.5}, "layer_decay=1.5"),
        ({"warmup_fraction": 1.0}, "warmup_fraction=1.0"),
        ({"min_lr_ratio": 2}, "min_lr_ratio=2"),
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        OptimConfig(**kw)
    assert not math.isnan(OptimConfig().lr)
