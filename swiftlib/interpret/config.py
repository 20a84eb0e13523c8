"""Settings of the interpretation entry points, as small validated dataclasses.

:func:`~swiftlib.interpret.attribute` takes an :class:`AttributionConfig` and
:func:`~swiftlib.interpret.extract_embeddings` an :class:`EmbeddingConfig`; both extend
:class:`InferenceConfig`, the settings every pass of a checkpoint over store windows needs
(window layout, batch size, precision, device, progress). Each checks its fields when it is
built and names the field, the value given and what is allowed::

    cfg = AttributionConfig(method="smoothgrad", nt_samples=8)
    attribute(checkpoint, store, subjects, cfg)               # a config object, or
    attribute(checkpoint, store, subjects, method="smoothgrad", nt_samples=8)  # its fields

Keywords are the config's field names; they replace the fields of ``config`` when both are
given, and an unknown keyword is refused with a "did you mean".
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from swiftlib.utils.config import ConfigError
from swiftlib.utils.validation import did_you_mean

__all__ = [
    "METHODS",
    "AGGREGATES",
    "BASELINES",
    "LEVELS",
    "PRECISIONS",
    "InferenceConfig",
    "AttributionConfig",
    "EmbeddingConfig",
]

METHODS = ("ig", "ig_smoothgrad_sq", "saliency", "smoothgrad", "grad_x_input", "occlusion")
AGGREGATES = ("abs", "signed", "subject_abs")
BASELINES = ("background", "temporal_mean")
TARGETS = ("label", "predicted")
LEVELS = ("subject", "window")
PRECISIONS = ("fp32", "bf16")


# ---------------------------------------------------------------------------------------------
# field checks
# ---------------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _Fields:
    """Raises :class:`ConfigError` naming ``<Config>.<field>=<value>`` and what is allowed."""

    def __init__(self, config):
        self.owner = type(config).__name__
        self.config = config

    def fail(self, name: str, expected: str):
        value = getattr(self.config, name)
        raise ConfigError(f"{self.owner}.{name}={value!r}: expected {expected}")

    def choice(self, name: str, allowed: Sequence[str]) -> None:
        value = getattr(self.config, name)
        if not isinstance(value, str) or value not in allowed:
            self.fail(name, f"one of {tuple(allowed)}{did_you_mean(value, allowed)}")

    def integer(self, name: str, minimum: int, optional: bool = False, what: str = "") -> None:
        value = getattr(self.config, name)
        if optional and value is None:
            return
        if not _is_int(value) or value < minimum:
            none = " or None" if optional else ""
            self.fail(name, f"an integer >= {minimum}{none}{what}")
        setattr(self.config, name, int(value))

    def number(self, name: str, minimum: float, strict: bool, what: str = "") -> None:
        value = getattr(self.config, name)
        if not _is_number(value) or (value <= minimum if strict else value < minimum):
            self.fail(name, f"a number {'>' if strict else '>='} {minimum:g}{what}")
        setattr(self.config, name, float(value))

    def flag(self, name: str) -> None:
        if not isinstance(getattr(self.config, name), bool):
            self.fail(name, "True or False")


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------


@dataclass
class InferenceConfig:
    """How a checkpoint reads a store's windows: what attributions and embeddings share.

    Attributes:
        sequence_length: frames per window; None = as the model was trained (the
            checkpoint's data config), else its ``img_size`` T.
        stride_between_seq: step between window starts as a fraction of the window
            (1.0 = back to back, 0.5 = half overlap).
        stride_within_seq: frame step inside a window; None = as the model was trained.
        batch_size: windows per forward pass.
        precision: ``"fp32"`` or ``"bf16"`` (autocast; faster on CPUs with AVX-512 BF16
            and on GPUs).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ….
        progress: show a tqdm progress bar over windows.
    """

    sequence_length: int | None = None
    stride_between_seq: float = 1.0
    stride_within_seq: int | None = None
    batch_size: int = 8
    precision: str = "fp32"
    device: str | torch.device = "auto"
    progress: bool = True

    example_option: ClassVar[str] = "device"  # named in the hint for a config given as a string

    def __post_init__(self) -> None:
        f = _Fields(self)
        f.integer("sequence_length", 1, optional=True, what=" (frames per window)")
        f.number(
            "stride_between_seq",
            0.0,
            strict=True,
            what=" (a fraction of the window: 1.0 = back to back, 0.5 = half overlap)",
        )
        f.integer("stride_within_seq", 1, optional=True, what=" (frame step inside a window)")
        f.integer("batch_size", 1, what=" (windows per forward pass)")
        f.choice("precision", PRECISIONS)
        self._check_device(f)
        f.flag("progress")

    def _check_device(self, f: _Fields) -> None:
        if isinstance(self.device, torch.device) or self.device == "auto":
            return
        expected = "'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device"
        if not isinstance(self.device, str):
            f.fail("device", expected)
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            f.fail("device", expected)

    @classmethod
    def resolve(
        cls,
        config=None,
        options: Mapping[str, Any] | None = None,
        caller: str | None = None,
        also: Sequence[str] = (),
    ):
        """``config`` (default: every field at its default) with ``options`` replacing fields.

        ``caller`` names the function in messages; ``also`` lists the caller's own keyword
        arguments, so a misspelt one gets a suggestion too. Raises :class:`ConfigError` for a
        ``config`` of another type, an unknown option, or a field value that is not allowed.
        """
        where = f"{caller}: " if caller else ""
        if config is not None and not isinstance(config, cls):
            hint = (
                f"; pass settings as keywords (e.g. {cls.example_option}={config!r})"
                if isinstance(config, str)
                else ""
            )
            raise ConfigError(f"{where}config={config!r}: expected {cls.__name__} or None{hint}")
        options = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names]
        if unknown:
            key = unknown[0]
            raise ConfigError(
                f"{where}unknown option {key!r}{did_you_mean(key, [*names, *also])}; "
                f"options are the {cls.__name__} fields: {', '.join(names)}"
            )
        return dataclasses.replace(config if config is not None else cls(), **options)


@dataclass
class AttributionConfig(InferenceConfig):
    """Settings of :func:`~swiftlib.interpret.attribute` (and of ``attribute_windows``).

    Attributes:
        method: one of ``METHODS``: Integrated Gradients (``"ig"``), IG with SmoothGrad²,
            gradients (``"saliency"``), ``"smoothgrad"``, ``"grad_x_input"``, ``"occlusion"``.
        target: the output to explain: a class index, ``"label"`` (each subject's true
            class), ``"predicted"``; None = predicted class (classification) or the single
            regression output.
        label: the label the checkpoint should predict (checked; None = not checked).
        baseline: the IG / occlusion reference input: ``"background"``, ``"temporal_mean"``
            or a number (see ``make_baseline``).
        aggregate: ``"abs"``, ``"signed"`` or ``"subject_abs"`` (see ``attribute``).
        windows: at most this many windows per subject (evenly spaced); None = all.
        batch_size: windows per captum call (default 1).
        internal_batch_size: IG steps / occlusion perturbations per forward pass (memory);
            None = all at once.
        n_steps: IG integration steps.
        nt_samples: noisy copies per window for the SmoothGrad methods.
        noise_level: SmoothGrad noise σ as a fraction of the window's value range.
        occlusion_window: ``(d, h, w)`` voxels occluded together, over all frames.
        keep_window_maps: also keep every ``(D, H, W, T)`` window map (memory!).
        seed: seed of the SmoothGrad noise (drawn in a forked RNG: the same call gives the
            same maps whatever the caller's RNG state).
    """

    method: str = "ig"
    target: int | str | None = None
    label: str | None = None
    baseline: str | float = "background"
    aggregate: str = "abs"
    windows: int | None = None
    batch_size: int = 1
    internal_batch_size: int | None = 8
    n_steps: int = 32
    nt_samples: int = 8
    noise_level: float = 0.1
    occlusion_window: tuple[int, int, int] = (4, 4, 4)
    keep_window_maps: bool = False
    seed: int = 0

    example_option: ClassVar[str] = "method"

    def __post_init__(self) -> None:
        super().__post_init__()
        f = _Fields(self)
        f.choice("method", METHODS)
        self._check_target(f)
        if self.label is not None and not isinstance(self.label, str):
            f.fail("label", "a label name (str) or None")
        self._check_baseline(f)
        f.choice("aggregate", AGGREGATES)
        f.integer("windows", 1, optional=True, what=" (windows per subject; None = all)")
        f.integer("internal_batch_size", 1, optional=True, what=" (None = all at once)")
        f.integer("n_steps", 1, what=" (IG integration steps)")
        f.integer("nt_samples", 1, what=" (noisy copies per window)")
        f.number("noise_level", 0.0, strict=False, what=" (a fraction of the value range)")
        win = self.occlusion_window
        if (
            isinstance(win, (str, bytes))
            or not isinstance(win, Sequence)
            or len(win) != 3
            or not all(_is_int(v) and v >= 1 for v in win)
        ):
            f.fail("occlusion_window", "three positive voxel counts (d, h, w)")
        self.occlusion_window = tuple(int(v) for v in win)
        f.flag("keep_window_maps")
        f.integer("seed", 0)

    def _check_target(self, f: _Fields) -> None:
        t = self.target
        if t is None or (isinstance(t, str) and t in TARGETS) or (_is_int(t) and t >= 0):
            return
        hint = did_you_mean(t, TARGETS) if isinstance(t, str) else ""
        f.fail("target", f"a class index >= 0, 'label' (true class), 'predicted' or None{hint}")

    def _check_baseline(self, f: _Fields) -> None:
        b = self.baseline
        if _is_number(b):
            self.baseline = float(b)
        elif not isinstance(b, str) or b not in BASELINES:
            hint = did_you_mean(b, BASELINES) if isinstance(b, str) else ""
            f.fail("baseline", f"'background', 'temporal_mean' or a number{hint}")


@dataclass
class EmbeddingConfig(InferenceConfig):
    """Settings of :func:`~swiftlib.interpret.extract_embeddings`.

    Attributes:
        level: ``"subject"`` (mean over a subject's windows) or ``"window"`` (one row each).
        stages: also pool these encoder stages (``forward_intermediates`` indices, >= 0).
        chunk_subjects: subjects per written chunk (the unit of resumption).
        num_workers: DataLoader workers.
    """

    level: str = "subject"
    stages: tuple[int, ...] = ()
    chunk_subjects: int = 64
    num_workers: int = 0

    example_option: ClassVar[str] = "level"

    def __post_init__(self) -> None:
        super().__post_init__()
        f = _Fields(self)
        f.choice("level", LEVELS)
        st = self.stages
        if (
            isinstance(st, (str, bytes))
            or not isinstance(st, Sequence)
            or not all(_is_int(s) and s >= 0 for s in st)
        ):
            f.fail("stages", "a sequence of stage indices >= 0, e.g. (0, 2)")
        self.stages = tuple(int(s) for s in st)
        f.integer("chunk_subjects", 1, what=" (subjects per written chunk)")
        f.integer("num_workers", 0, what=" (DataLoader workers)")
