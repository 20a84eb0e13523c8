"""The search space: what a trial may change in a fine-tuning configuration.

:class:`SearchSpace` says which dimensions vary and within which bounds; :func:`suggest` is
the one function that draws a trial's configuration from it; :func:`check_space` refuses a
space that is empty or contradicts the base configuration before anything trains.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import optuna

from swiftlib.training.config import FitConfig
from swiftlib.training.tune.errors import TuneError
from swiftlib.utils.config import ConfigError, config_from_dict, config_to_dict

__all__ = [
    "CONTINUOUS",
    "HEADS",
    "MODES",
    "SearchSpace",
    "as_search_space",
    "base_config",
    "check_space",
    "suggest",
]

MODES = ("linear_probe", "unfreeze", "full")
HEADS = ("linear", "mlp")
#: The categorical dimensions: SearchSpace field -> Optuna parameter name.
CATEGORICAL = {"modes": "mode", "heads": "head", "batch_sizes": "batch_size"}

Range = tuple[float, float]


class Bounds(NamedTuple):
    """The values a continuous dimension accepts."""

    low: float
    high: float
    high_inclusive: bool
    log: bool  # searched on a log scale (so a range must be > 0)
    positive: bool  # every value must be > 0, fixed ones too
    rule: str  # the rule in words, for error messages


#: The continuous dimensions: name -> accepted values.
CONTINUOUS = {
    "lr": Bounds(0.0, math.inf, True, True, True, "> 0"),
    "weight_decay": Bounds(
        0.0, math.inf, True, True, False, "≥ 0 (> 0 in a range: it is searched on a log scale)"
    ),
    "layer_decay": Bounds(0.0, 1.0, True, False, True, "in (0, 1]"),
    "unfreeze_fraction": Bounds(0.0, 1.0, True, False, True, "in (0, 1]"),
    "head_dropout": Bounds(0.0, 1.0, False, False, False, "in [0, 1)"),
    "label_smoothing": Bounds(0.0, 1.0, False, False, False, "in [0, 1)"),
    "warmup_fraction": Bounds(0.0, 1.0, False, False, False, "in [0, 1)"),
}


def _accepts(bounds: Bounds, x: float, in_range: bool) -> bool:
    if x < bounds.low or x > bounds.high or (x == bounds.high and not bounds.high_inclusive):
        return False
    must_be_positive = bounds.positive or (bounds.log and in_range)
    return not (must_be_positive and x <= 0)


@dataclass
class SearchSpace:
    """What :func:`suggest` may change. Each continuous dimension is ``(low, high)``
    (searched), a number (fixed) or ``None`` (keep the base configuration's value); each
    categorical one is a tuple of choices (one choice = fixed) or ``None``. ``lr`` and
    ``weight_decay`` are searched on a log scale. ``layer_decay`` 1 means no decay; it and
    ``unfreeze_fraction`` are only drawn where they matter (not for a linear probe / outside
    ``mode="unfreeze"``), and ``label_smoothing`` only for classification."""

    lr: float | Range | None = (1e-5, 3e-3)  # peak learning rate, log scale
    weight_decay: float | Range | None = (1e-4, 0.3)  # AdamW weight decay, log scale
    layer_decay: float | Range | None = (0.5, 1.0)  # layer-wise LR decay; 1 = none
    modes: tuple[str, ...] | None = MODES  # linear_probe, unfreeze, full
    unfreeze_fraction: float | Range | None = (0.1, 0.5)  # unfreeze: top fraction of groups
    heads: tuple[str, ...] | None = HEADS  # linear, mlp
    head_dropout: float | Range | None = (0.0, 0.5)
    label_smoothing: float | Range | None = (0.0, 0.2)  # classification only
    batch_sizes: tuple[int, ...] | None = (8, 16, 32)  # global batch sizes
    warmup_fraction: float | Range | None = (0.0, 0.2)  # of the optimiser steps

    def __post_init__(self):
        for name, bounds in CONTINUOUS.items():
            self._check_continuous(name, bounds)
        for name, valid in (("modes", MODES), ("heads", HEADS)):
            self._check_choices(name, valid)
        self._check_batch_sizes()

    def _check_continuous(self, name: str, bounds: Bounds) -> None:
        v = getattr(self, name)
        if v is None:
            return
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise TuneError(
                    f"search space {name}={v!r}: expected (low, high), a number or None"
                )
            lo, hi = float(v[0]), float(v[1])
            if lo > hi:
                raise TuneError(
                    f"search space {name}=({lo:g}, {hi:g}): low is above high; swap them"
                )
            setattr(self, name, (lo, hi) if lo < hi else lo)  # (x, x) is a fixed value
            values, in_range = (lo, hi), True
        else:
            setattr(self, name, float(v))
            values, in_range = (float(v),), False
        if not all(_accepts(bounds, x, in_range) for x in values):
            raise TuneError(f"search space {name}={v!r}: every value must be {bounds.rule}")

    def _check_choices(self, name: str, valid: tuple[str, ...]) -> None:
        v = getattr(self, name)
        if v is None:
            return
        v = (v,) if isinstance(v, str) else tuple(v)
        if not v:
            raise TuneError(
                f"search space {name}=(): no choice left; give at least one of {valid} "
                "or None to keep the base configuration's value"
            )
        unknown = [c for c in v if c not in valid]
        if unknown or len(set(v)) != len(v):
            raise TuneError(f"search space {name}={v!r}: expected distinct choices among {valid}")
        setattr(self, name, v)

    def _check_batch_sizes(self) -> None:
        if self.batch_sizes is None:
            return
        v = (self.batch_sizes,) if isinstance(self.batch_sizes, int) else tuple(self.batch_sizes)
        if not v:
            raise TuneError(
                "search space batch_sizes=(): no choice left; give at least one or None"
            )
        not_positive = any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in v)
        if not_positive or len(set(v)) != len(v):
            raise TuneError(f"search space batch_sizes={v!r}: expected distinct positive integers")
        self.batch_sizes = v

    def searched(self, task: str = "classification", base_mode: str = "full") -> list[str]:
        """Names of the dimensions that vary (for ``task``, and ``base_mode`` when ``modes``
        is None)."""
        out = [n for n in CONTINUOUS if isinstance(getattr(self, n), tuple)]
        modes = self.modes or (base_mode,)
        if task != "classification" and "label_smoothing" in out:
            out.remove("label_smoothing")
        if "unfreeze" not in modes and "unfreeze_fraction" in out:
            out.remove("unfreeze_fraction")
        if modes == ("linear_probe",) and "layer_decay" in out:
            out.remove("layer_decay")
        return out + [n for n in CATEGORICAL if len(getattr(self, n) or ()) > 1]

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpace:
        """From plain values (notebook parameters, YAML): a continuous dimension may be a
        list ``[low, high]``, ``[value]`` (fixed) or ``[]`` (keep the base value); numbers
        written as strings (YAML reads ``1e-4`` as one) are converted."""
        d = dict(d)
        for name in CONTINUOUS:
            v = d.get(name)
            if isinstance(v, (list, tuple)):
                try:
                    v = [float(x) for x in v]
                except (TypeError, ValueError):
                    raise TuneError(f"search space {name}={d[name]!r}: expected numbers") from None
                d[name] = None if not v else v[0] if len(v) == 1 else tuple(v)
            elif isinstance(v, str):
                try:
                    d[name] = float(v)
                except ValueError:
                    raise TuneError(
                        f"search space {name}={v!r}: expected a number or [low, high]"
                    ) from None
        try:
            return config_from_dict(cls, d)
        except ConfigError as e:
            raise TuneError(f"search space: {e}") from None

    def to_dict(self) -> dict:
        return config_to_dict(self)


def as_search_space(space: SearchSpace | dict | None) -> SearchSpace:
    """``space`` as a :class:`SearchSpace`: the default (full) space for None, or from a dict."""
    if space is None:
        return SearchSpace()
    return SearchSpace.from_dict(space) if isinstance(space, dict) else space


def base_config(base_cfg) -> dict:
    """A fresh, complete dict of the fine-tuning configuration ``base_cfg`` (FitConfig or dict)."""
    cfg = FitConfig.from_dict(base_cfg) if isinstance(base_cfg, dict) else base_cfg
    if not isinstance(cfg, FitConfig):
        raise TuneError(f"base_cfg: expected a FitConfig or a dict, got {type(base_cfg).__name__}")
    if cfg.kind != "finetune":
        raise TuneError(
            f"base_cfg kind={cfg.kind!r}: tuning searches fine-tuning settings; use kind='finetune'"
        )
    return cfg.to_dict()


def suggest(trial, base_cfg, space: SearchSpace | dict | None = None) -> dict:
    """The whole search space in one place: a fit configuration (a dict) for ``trial``,
    drawn from ``space`` (default :class:`SearchSpace`) around ``base_cfg`` (a fine-tuning
    ``FitConfig`` or dict). Optuna parameter names: ``lr``, ``weight_decay``,
    ``layer_decay``, ``mode``, ``unfreeze_fraction``, ``head``, ``head_dropout``,
    ``label_smoothing``, ``batch_size``, ``warmup_fraction``."""
    space = as_search_space(space)
    cfg = base_config(base_cfg)  # a fresh, complete dict every time
    task = cfg["task"]
    optim = task.setdefault("optim", {})

    def draw(name):
        value = getattr(space, name)
        if isinstance(value, tuple):
            return trial.suggest_float(name, value[0], value[1], log=CONTINUOUS[name].log)
        return value  # fixed or None

    def choose(field):
        choices = getattr(space, field)
        if choices is None:
            return None
        if len(choices) == 1:
            return choices[0]
        return trial.suggest_categorical(CATEGORICAL[field], list(choices))

    mode = choose("modes")
    if mode is not None:
        task["mode"] = mode
    mode = task.get("mode", "full")
    if mode == "unfreeze":
        fraction = draw("unfreeze_fraction")
        if fraction is not None:
            task.update(unfreeze_fraction=fraction, unfreeze_last_k=None)
    else:
        task.update(unfreeze_fraction=None, unfreeze_last_k=None)
    for name in ("lr", "weight_decay", "warmup_fraction"):
        v = draw(name)
        if v is not None:
            optim[name] = v
    if mode != "linear_probe":
        decay = draw("layer_decay")
        if decay is not None:
            optim["layer_decay"] = None if decay >= 1 else decay
    head = choose("heads")
    if head is not None:
        task["head"] = head
    dropout = draw("head_dropout")
    if dropout is not None:
        task["head_dropout"] = dropout
    if task.get("task", "classification") == "classification":
        smoothing = draw("label_smoothing")
        if smoothing is not None:
            task["label_smoothing"] = smoothing
    batch = choose("batch_sizes")
    if batch is not None:
        cfg["data"]["batch_size"] = int(batch)
    return cfg


def check_space(space: SearchSpace, base: dict) -> list[str]:
    """Refuse a search space that is empty for this task, or whose corners do not make a
    valid configuration (e.g. a batch size that does not divide over the devices).
    Returns the searched dimensions."""
    task = base["task"].get("task", "classification")
    searched = space.searched(task, base["task"].get("mode", "full"))
    if not searched:
        raise TuneError(
            "the search space is empty: every dimension is fixed or None for this "
            f"task ({task}, mode {space.modes or base['task'].get('mode')}); give at "
            "least one (low, high) range or several choices"
        )
    base_unfreezes = (
        base["task"].get("unfreeze_fraction") is not None
        or base["task"].get("unfreeze_last_k") is not None
    )
    if (
        space.modes
        and "unfreeze" in space.modes
        and space.unfreeze_fraction is None
        and not base_unfreezes
    ):
        raise TuneError(
            "the search space allows mode 'unfreeze' but unfreeze_fraction is None "
            "and the base configuration sets neither task.unfreeze_fraction nor "
            "task.unfreeze_last_k; give a range, e.g. unfreeze_fraction=(0.1, 0.5)"
        )
    choices = {param: getattr(space, field) or (None,) for field, param in CATEGORICAL.items()}
    for combo in itertools.product(*choices.values()):
        for corner in (0, 1):  # the low, then the high end of every range
            params = {k: v for k, v in zip(choices, combo, strict=True) if v is not None}
            for name in CONTINUOUS:
                v = getattr(space, name)
                if isinstance(v, tuple):
                    params[name] = v[corner]
            try:
                FitConfig.from_dict(suggest(optuna.trial.FixedTrial(params), base, space))
            except (ValueError, TypeError) as e:
                shown = {k: params[k] for k in CATEGORICAL.values() if k in params}
                raise TuneError(
                    f"the search space contradicts the base configuration at {shown}: {e}"
                ) from None
    return searched
