"""Model registry: presets are config dataclasses; ``create_model(name, **overrides)`` builds.

A preset is ``(model class, config instance)``; overrides replace config fields after a
name and type check ("did you mean …" for typos). Models never read files themselves:
``create_model(..., checkpoint_path=...)`` loads weights here with
``torch.load(weights_only=True)`` through the model file's ``checkpoint_filter_fn``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swiftlib.utils.config import check_type
from swiftlib.utils.validation import did_you_mean

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "get_model_config",
    "model_entry",
    "load_checkpoint",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """One registered preset."""

    name: str
    model_cls: type[nn.Module]
    config: Any
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, model_cls: type[nn.Module], config: Any, description: str = ""
) -> None:
    """Register preset ``name`` = ``model_cls(config)``. ``config`` is a dataclass instance."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config of preset {name!r} must be a dataclass instance")
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, model_cls, config, description)


def list_models(pattern: str = "*") -> list[str]:
    """Registered preset names matching a shell-style ``pattern`` (``"swift_v2_*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names fail with suggestions."""
    if name not in _REGISTRY:
        names = list_models()
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name, names, n=3, cutoff=0.5)}. Available: "
            f"{', '.join(names)}"
        )
    return _REGISTRY[name]


def _check_type(cfg_name: str, field: str, default: Any, value: Any) -> Any:
    """One override checked against its field's default type (utils' checker); a scalar for
    a tuple field passes (``to_ntuple`` broadcasts it in the model). Returns the value."""
    if default is None or value is None:
        return value
    if (
        isinstance(default, tuple)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ):
        return value
    kind = (
        tuple
        if isinstance(default, tuple)
        else dict
        if isinstance(default, dict)
        else type(default)
    )
    return check_type(value, kind, f"{cfg_name}.{field}")


def get_model_config(name: str, **overrides: Any) -> Any:
    """The config dataclass of preset ``name`` with ``overrides`` applied (no model built)."""
    entry = model_entry(name)
    cfg = entry.config
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        k = unknown[0]
        raise TypeError(
            f"unknown option {k!r} for model {name!r} ({type(cfg).__name__})."
            f"{did_you_mean(k, fields, n=3, cutoff=0.5)}. Valid options: {', '.join(fields)}"
        )
    checked = {
        k: _check_type(type(cfg).__name__, k, getattr(cfg, k), v) for k, v in overrides.items()
    }
    return dataclasses.replace(cfg, **checked)


def create_model(
    name: str, checkpoint_path: str | Path | None = None, **overrides: Any
) -> nn.Module:
    """Build preset ``name`` with config ``overrides``; optionally load a checkpoint.

    >>> model = create_model("swift_v1_test", drop_path_rate=0.1)

    Args:
        name: a registered preset (see :func:`list_models`).
        checkpoint_path: optional weights file (``.ckpt`` / ``.pt`` / ``.pth``), loaded with
            ``torch.load(weights_only=True)`` and mapped by the model's
            ``checkpoint_filter_fn`` (e.g. a public SwiFT v1 Lightning checkpoint).
        **overrides: config fields to change (unknown names fail with suggestions).
    """
    entry = model_entry(name)
    cfg = get_model_config(name, **overrides)
    model = entry.model_cls(cfg)
    model.pretrained_cfg = {"name": name}
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model


def load_checkpoint(model: nn.Module, checkpoint_path: str | Path, strict: bool = False) -> dict:
    """Load weights into ``model`` through its module's ``checkpoint_filter_fn``.

    Returns a report ``{"loaded": [...], "missing": [...], "unexpected": [...]}`` (also logged).
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint_path {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refusal: objects other than tensors/containers
        raise RuntimeError(
            f"could not load {str(path)!r} with torch.load(weights_only=True): {err}. "
            "swiftlib only loads plain tensors; re-save the state_dict with "
            "torch.save(torch.load(path, weights_only=False)['state_dict'], new_path) on a "
            "trusted machine"
        ) from err
    filter_fn: Callable | None = getattr(
        sys.modules[type(model).__module__], "checkpoint_filter_fn", None
    )
    if filter_fn is not None:
        state = filter_fn(state, model)
    elif isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    result = model.load_state_dict(state, strict=strict)
    report = {
        "loaded": sorted(k for k in state if k not in set(result.unexpected_keys)),
        "missing": list(result.missing_keys),
        "unexpected": list(result.unexpected_keys),
    }
    _logger.info(
        "loaded %d tensors from %s (%d missing, %d unexpected)",
        len(report["loaded"]),
        path,
        len(report["missing"]),
        len(report["unexpected"]),
    )
    if report["missing"]:
        _logger.warning("keys not in the checkpoint (left at init): %s", report["missing"])
    return report
