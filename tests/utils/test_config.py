"""config_from_dict: unknown keys, missing keys and types are rejected with clear messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from swiftlib.utils.config import ConfigError, config_from_dict, config_to_dict


@dataclass
class Inner:
    rate: float = 0.5
    name: str = "x"


@dataclass
class Outer:
    batch_size: int = 8
    lr: float = 1e-3
    name: str = "run"
    flag: bool = False
    shape: tuple[int, int, int] = (1, 2, 3)
    sizes: tuple[int, ...] = (4,)
    items: list[int] = field(default_factory=list)
    table: dict[str, float] = field(default_factory=dict)
    maybe: int | None = None
    either: str | tuple[str, ...] = "a"
    mode: Literal["train", "eval"] = "train"
    inner: Inner = field(default_factory=Inner)


@dataclass
class Required:
    path: str
    n: int = 1


def test_defaults_and_none():
    assert config_from_dict(Outer, {}) == Outer()
    assert config_from_dict(Outer, None) == Outer()


def test_unknown_key_did_you_mean_and_valid_keys():
    with pytest.raises(ConfigError) as e:
        config_from_dict(Outer, {"bach_size": 4})
    msg = str(e.value)
    assert "'bach_size'" in msg and "did you mean 'batch_size'" in msg
    assert "valid keys:" in msg and "lr" in msg and "shape" in msg


def test_conversions():
    cfg = config_from_dict(
        Outer,
        {
            "lr": 1,
            "shape": [4, 5, 6],
            "sizes": [1, 2],
            "maybe": None,
            "either": ["a", "b"],
            "inner": {"rate": 2},
            "table": {"a": 1},
        },
    )
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.shape == (4, 5, 6) and cfg.sizes == (1, 2)
    assert cfg.either == ("a", "b")
    assert cfg.inner == Inner(rate=2.0) and isinstance(cfg.inner.rate, float)
    assert cfg.table == {"a": 1.0}


@pytest.mark.parametrize(
    "d, fragment",
    [
        ({"batch_size": "8"}, "Outer.batch_size='8' (str): expected an integer"),
        ({"batch_size": 8.0}, "expected an integer"),
        ({"batch_size": True}, "expected an integer"),
        ({"lr": "fast"}, "expected a number"),
        ({"lr": False}, "expected a number"),
        ({"name": 3}, "expected a string"),
        ({"flag": 1}, "expected true or false"),
        ({"shape": [1, 2]}, "expected 3 items"),
        ({"shape": 5}, "expected a tuple"),
        ({"sizes": [1, "x"]}, "Outer.sizes[1]"),
        ({"items": (1, 2.5)}, "Outer.items[1]"),
        ({"items": "abc"}, "expected a list"),
        ({"table": [1]}, "expected a mapping"),
        ({"table": {"a": "b"}}, "Outer.table['a']"),
        ({"maybe": "3"}, "Outer.maybe"),
        ({"mode": "test"}, "expected one of ['train', 'eval']"),
        ({"inner": 3}, "expected a mapping of Inner fields"),
        ({"inner": {"rat": 1.0}}, "did you mean 'rate'"),
        ({"either": 3}, "Outer.either=3"),
    ],
)
def test_wrong_types(d, fragment):
    with pytest.raises(ConfigError) as e:
        config_from_dict(Outer, d)
    assert fragment in str(e.value)


def test_config_error_is_value_and_type_error():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, TypeError)


def test_missing_required():
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['path'\]"):
        config_from_dict(Required, {"n": 2})
    assert config_from_dict(Required, {"path": "p"}).path == "p"


def test_not_a_mapping_or_not_a_dataclass():
    with pytest.raises(ConfigError, match="expected a mapping"):
        config_from_dict(Outer, [("batch_size", 1)])
    with pytest.raises(TypeError, match="needs a dataclass type"):
        config_from_dict(dict, {})


def test_to_dict_round_trip():
    cfg = Outer(shape=(7, 8, 9), inner=Inner(rate=0.25))
    d = config_to_dict(cfg)
    assert d["shape"] == [7, 8, 9] and d["inner"] == {"rate": 0.25, "name": "x"}
    assert config_from_dict(Outer, d) == cfg
