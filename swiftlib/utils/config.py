"""Build config dataclasses from plain dictionaries, rejecting unknown keys and wrong types.

Every stage's config flows one way (STYLE rule 13): parameters (a notebook's
``parameters`` cell, a YAML file, the CLI) → ``Config.from_dict`` → objects. This module is
the shared checker behind every ``from_dict``::

    @dataclass
    class DataConfig:
        batch_size: int = 8
        ...

        @classmethod
        def from_dict(cls, d):
            return config_from_dict(cls, d)

Checked: unknown keys (with a "did you mean"), missing required fields, and the types of
``int``, ``float`` (an ``int`` is accepted and converted), ``str``, ``bool``, ``tuple[...]``
(a list is accepted, as YAML/JSON have no tuples), ``list[...]``, ``dict[...]``,
``Optional``/``X | None``, ``Literal[...]`` and nested dataclasses (given as dicts).
Other annotations are passed through unchecked.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from swiftlib.utils.validation import did_you_mean

__all__ = ["ConfigError", "check_type", "config_from_dict", "config_to_dict"]

_MISSING = object()


class ConfigError(ValueError, TypeError):
    """A configuration dictionary has an unknown key, a missing key or a wrong type."""


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` (int→float, list→tuple, dict→dataclass) or raise
    :class:`ConfigError` naming ``where``, the value and what was expected. The one type
    checker of swiftlib: configs, model overrides and notebook parameters go through it."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return check_type(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}={value!r} ({type(value).__name__}): expected {_type_name(tp)}")

    if origin is Literal:
        if value in args and not (
            isinstance(value, bool) and not any(isinstance(a, bool) for a in args)
        ):
            return value
        raise ConfigError(f"{where}={value!r}: expected one of {list(args)}")

    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(tp, value, name=where)
        raise ConfigError(f"{where}={value!r}: expected a mapping of {tp.__name__} fields")

    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}={value!r} ({type(value).__name__}): expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}={value!r} ({type(value).__name__}): expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}={value!r} ({type(value).__name__}): expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}={value!r} ({type(value).__name__}): expected a string")

    if origin in (tuple, list) or tp in (tuple, list):
        container = origin or tp
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"{where}={value!r} ({type(value).__name__}): expected a "
                f"{'tuple' if container is tuple else 'list'} ({_type_name(tp)})"
            )
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(
                    f"{where}={value!r}: expected {len(args)} items ({_type_name(tp)})"
                )
            items = [
                check_type(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        elif args:
            items = [check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            items = list(value)
        return tuple(items) if container is tuple else items

    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}={value!r} ({type(value).__name__}): expected a mapping")
        if len(args) == 2:
            return {
                check_type(k, args[0], f"{where} key"): check_type(v, args[1], f"{where}[{k!r}]")
                for k, v in value.items()
            }
        return dict(value)

    return value  # an annotation we do not check (e.g. a callable, a path-like)


def config_from_dict(cls: type, d: Mapping[str, Any] | None, name: str | None = None):
    """Build dataclass ``cls`` from mapping ``d``; clear errors for unknown/missing/ill-typed keys.

    Args:
        cls: a dataclass type.
        d: its fields as a mapping (e.g. parsed YAML); ``None`` means all defaults.
        name: how to call the config in messages (default ``cls.__name__``).

    Raises:
        ConfigError: naming the key, the value given, what was expected and the valid keys.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"config_from_dict needs a dataclass type, got {cls!r}")
    label = name or cls.__name__
    d = {} if d is None else d
    if not isinstance(d, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys to values, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    valid = sorted(fields)
    unknown = [k for k in d if k not in fields]
    if unknown:
        parts = [f"{k!r}{did_you_mean(k, valid)}" for k in unknown]
        raise ConfigError(
            f"{label}: unknown key(s) {', '.join(parts)}; valid keys: {', '.join(valid)}"
        )
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to no type checks
        hints = {}
    kwargs = {}
    for key, value in d.items():
        kwargs[key] = check_type(value, hints.get(key, Any), f"{label}.{key}")
    missing = [
        k
        for k, f in fields.items()
        if k not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"{label}: missing required key(s) {missing}; valid keys: {', '.join(valid)}"
        )
    return cls(**kwargs)


def config_to_dict(cfg) -> dict:
    """Plain-Python dict of a config dataclass (tuples become lists, for YAML/JSON)."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))
