"""Notebook parameters → run configuration: the one mapping, written once (STYLE 13).

A notebook's ``parameters`` cell holds flat, typed literals (what papermill can inject);
:func:`swiftlib.training.fit` takes a nested :class:`~swiftlib.training.FitConfig`. A notebook
passes its parameters to :func:`fit_config` and gets the checked config back::

    config = nb.fit_config("finetune", run_dir, store_path=store_path, lr=lr, ...)

Parameter names are the config's own field names (``batch_size``, ``enable_progress_bar``,
``eval_stride_between_seq``); where each one goes is listed in :data:`DESTINATIONS`. A parameter
that is not passed keeps the config's default. Notebook literals cannot be ``None``, so the
"unset" spellings of the parameters cells are converted here, and only here:

- ``windows_per_subject: 0`` → ``None`` (every window),
- ``few_shot_n: 0`` → ``None`` (all training participants),
- ``checkpoint_every_n_steps: 0`` → ``None`` (at epoch ends only),
- ``init_from: ""`` → ``None`` (random initialisation),
- ``resume_from: ""`` → ``None`` (a new run from step 0; a path continues that checkpoint),
- ``layer_decay: 1.0`` (or more) → ``None`` (one learning rate for every layer),
- ``unfreeze_fraction`` → ``None`` unless ``mode="unfreeze"`` (the only mode that reads it),
- ``store_path: "a, b"`` → ``("a", "b")`` (several stores, mixed for training).

Path parameters (``store_path``, ``splits_dir``, ``init_from``, ``resume_from``) are resolved
like every notebook path (:func:`swiftlib.notebook.resolve`: relative to the project,
``$VARS`` expanded).
Unknown or ill-typed parameters are refused with the parameter's name and the expected type.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = ["fit_config", "number_or_word", "DESTINATIONS", "UNSET"]


class _Unset:
    """The default of every bridge parameter: "not passed, keep the config's default"."""

    def __repr__(self) -> str:
        return "UNSET"


#: Marks a parameter that was not passed (the config's default applies).
UNSET = _Unset()


def _param():
    return field(default=UNSET)


@dataclass
class _RunParameters:
    """Parameters of both kinds. Annotations are the types a notebook passes (checked by
    :func:`swiftlib.utils.config.config_from_dict`)."""

    seed: int = _param()
    store_path: str | list[str] = _param()
    splits_dir: str = _param()
    sequence_length: int = _param()
    stride_within_seq: int = _param()
    stride_between_seq: float = _param()
    windows_per_subject: int = _param()
    eval_stride_between_seq: float = _param()
    batch_size: int = _param()
    num_workers: int = _param()
    pin_memory: bool = _param()
    model: str = _param()
    model_overrides: dict = _param()
    init_from: str = _param()
    resume_from: str = _param()
    lr: float = _param()
    weight_decay: float = _param()
    warmup_fraction: float = _param()
    max_epochs: int = _param()
    max_steps: int = _param()
    accelerator: str = _param()
    devices: int = _param()
    num_nodes: int = _param()
    strategy: str = _param()
    precision: str = _param()
    accumulate_grad_batches: int = _param()
    enable_progress_bar: bool = _param()
    checkpoint_every_n_steps: int = _param()
    mup: bool = _param()


@dataclass
class _PretrainParameters(_RunParameters):
    dataset_weights: str | dict[str, float] = _param()
    mask_ratio: float = _param()
    mask_strategy: str = _param()


@dataclass
class _FinetuneParameters(_RunParameters):
    label: str = _param()
    task: str = _param()
    mode: str = _param()
    unfreeze_fraction: float = _param()
    head: str = _param()
    head_dropout: float = _param()
    label_smoothing: float = _param()
    few_shot_n: int = _param()
    layer_decay: float = _param()
    template_mismatch: str = _param()


@dataclass
class _ContrastiveParameters(_RunParameters):
    temperature: float = _param()
    proj_dim: int = _param()
    mask_same_subject: bool = _param()
    pair_min_separation: int = _param()


_PARAMETERS = {
    "pretrain": _PretrainParameters,
    "contrastive": _ContrastiveParameters,
    "finetune": _FinetuneParameters,
}

#: Where each parameter lands in the :class:`~swiftlib.training.FitConfig` (section, field);
#: ``seed`` seeds the run and the task's head/mask initialisation alike.
DESTINATIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "seed": (("seed",), ("task", "seed")),
    "resume_from": (("resume_from",),),
    **{
        name: (("data", name),)
        for name in (
            "store_path",
            "splits_dir",
            "sequence_length",
            "stride_within_seq",
            "stride_between_seq",
            "windows_per_subject",
            "eval_stride_between_seq",
            "batch_size",
            "num_workers",
            "pin_memory",
            "dataset_weights",
            "few_shot_n",
            "pair_min_separation",
        )
    },
    **{
        name: (("task", name),)
        for name in (
            "model",
            "model_overrides",
            "init_from",
            "mask_ratio",
            "mask_strategy",
            "label",
            "task",
            "mode",
            "unfreeze_fraction",
            "head",
            "head_dropout",
            "label_smoothing",
            "temperature",
            "proj_dim",
            "mask_same_subject",
            "template_mismatch",
        )
    },
    **{
        name: (("task", "optim", name),)
        for name in ("lr", "weight_decay", "warmup_fraction", "layer_decay", "mup")
    },
    **{
        name: (("trainer", name),)
        for name in (
            "max_epochs",
            "max_steps",
            "accelerator",
            "devices",
            "num_nodes",
            "strategy",
            "precision",
            "accumulate_grad_batches",
            "enable_progress_bar",
            "checkpoint_every_n_steps",
        )
    },
}


def _zero_is_none(value):
    return None if value == 0 else value


def _path(value: str) -> str:
    from swiftlib.notebook import resolve

    return resolve(value)


def _path_or_none(value: str):
    return _path(value) or None


def _stores(value):
    from swiftlib.notebook import resolve

    items = value.split(",") if isinstance(value, str) else value
    paths = [resolve(s.strip()) for s in items if s.strip()]
    return paths[0] if len(paths) == 1 else tuple(paths)


#: The placeholder conversions (module docstring); ``unfreeze_fraction`` depends on ``mode``.
_CONVERT = {
    "windows_per_subject": _zero_is_none,
    "few_shot_n": _zero_is_none,
    "checkpoint_every_n_steps": _zero_is_none,
    "init_from": _path_or_none,
    "resume_from": _path_or_none,
    "splits_dir": _path,
    "store_path": _stores,
    "layer_decay": lambda v: None if v >= 1 else v,
    "pair_min_separation": lambda v: None if v < 0 else v,  # -1: a window's span (v1's rule)
}


def fit_config(kind: str, run_dir, **parameters):
    """The :class:`~swiftlib.training.FitConfig` of a notebook's flat parameters.

    Args:
        kind: ``"pretrain"`` (SimMIM), ``"contrastive"`` (NT-Xent) or ``"finetune"``.
        run_dir: the run directory (``nb.run_dir(...)``).
        **parameters: notebook parameters named as in :data:`DESTINATIONS`; those not passed
            keep the config's defaults.

    Raises:
        swiftlib.utils.config.ConfigError: an unknown parameter (with a "did you mean" and the
            valid names), a parameter of the other kind, a value of the wrong type, or an
            inconsistent configuration (e.g. a mask ratio outside 0.2–0.8).
    """
    from swiftlib.training import FitConfig
    from swiftlib.utils.config import ConfigError, config_from_dict

    if kind not in _PARAMETERS:
        raise ConfigError(f"fit_config kind={kind!r}: expected one of {sorted(_PARAMETERS)}")
    names = {k: {f.name for f in dataclasses.fields(cls)} for k, cls in _PARAMETERS.items()}
    own = names[kind]
    foreign: dict[str, list[str]] = {}  # parameter -> the kinds it belongs to
    for name in sorted(set(parameters) - own):
        kinds = [k for k in _PARAMETERS if name in names[k]]
        if kinds:
            foreign[name] = kinds
    if foreign:
        owners = sorted({k for kinds in foreign.values() for k in kinds})
        raise ConfigError(
            f"fit_config({kind!r}): {', '.join(map(repr, foreign))} only appl"
            f"{'ies' if len(foreign) == 1 else 'y'} to kind {' or '.join(map(repr, owners))}; "
            f"valid parameters: {', '.join(sorted(own))}"
        )
    checked = config_from_dict(_PARAMETERS[kind], parameters, name="fit_config")
    values = {f.name: getattr(checked, f.name) for f in dataclasses.fields(checked)}
    values = {k: v for k, v in values.items() if v is not UNSET}
    for name, convert in _CONVERT.items():
        if name in values:
            values[name] = convert(values[name])
    if "unfreeze_fraction" in values and values.get("mode", "full") != "unfreeze":
        values["unfreeze_fraction"] = None  # read in mode unfreeze only; refused elsewhere

    tree: dict = {
        "kind": kind,
        "run_dir": str(run_dir),
        "data": {},
        "task": {"optim": {}},
        "trainer": {},
    }
    for name, value in values.items():
        for *sections, key in DESTINATIONS[name]:
            node = tree
            for s in sections:
                node = node[s]
            node[key] = value
    if values.get("mup"):  # µP needs both switches: the model's init/attention and the LRs
        overrides = dict(tree["task"].get("model_overrides") or {})
        tree["task"]["model_overrides"] = {**overrides, "mup": True}
    optim = tree["task"].pop("optim")
    if optim:  # on top of the kind's own optimiser defaults (pretraining has its own learning rate)
        defaults = FitConfig.from_dict({"kind": kind}).task.optim.to_dict()
        tree["task"]["optim"] = {**defaults, **optim}
    return FitConfig.from_dict(tree)


def number_or_word(value: str) -> float | str:
    """A string parameter that holds either a number or a word, e.g. an attribution baseline
    (``"0"``, ``"-1.5"``, ``"1e-3"`` → a float; ``"background"`` → ``"background"``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if math.isfinite(number) else value
