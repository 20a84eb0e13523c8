"""What both tasks share: checkpoint metadata, the input contract, loading encoder weights
from SimMIM / fine-tuned / SwiFT v1 checkpoints, and RNG state for exact resumption."""

from __future__ import annotations

import ast
import logging
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from swiftlib.utils.validation import check_choice

__all__ = [
    "CHECKPOINT_KEY",
    "ContractError",
    "CheckpointError",
    "TemplateMismatchWarning",
    "TEMPLATE_POLICIES",
    "SWIFT_V1_CONTRACT",
    "check_contract",
    "read_checkpoint",
    "resolve_checkpoint",
    "load_encoder_weights",
    "build_encoder",
    "rng_state",
    "set_rng_state",
    "CheckpointMetaMixin",
]

log = logging.getLogger(__name__)

# checkpoint["swiftlib"] = {"kind", "model", "model_overrides", "contract", ...}
CHECKPOINT_KEY = "swiftlib"
_CONTRACT_FIELDS = ("grid", "voxel_size", "space", "layout", "normalisation")
_FIX_FLAGS = {
    "grid": "--grid",
    "voxel_size": "--voxel-size",
    "layout": "--layout",
    "normalisation": "--normalisation",
    "template": "--template",
}
_DEFAULT_LAYOUT = "mni_ras"  # what a contract without a layout meant (stores before layouts)
_UNKNOWN_TEMPLATE = "unknown"
#: What to do when the data's MNI template differs from a checkpoint's (``template_mismatch``).
TEMPLATE_POLICIES = ("warn", "error", "ignore")
#: What the public SwiFT v1 checkpoints (no swiftlib metadata) were trained on: v1's own input
#: convention (the ``swift_v1`` layout: LAS order, 96³ at 2 mm, v1's global z-score) on
#: FSL/HCP MNI152NLin6Asym data (HCP S1200; the contrastive checkpoint also saw UKB and ABCD).
SWIFT_V1_CONTRACT = {
    "grid": [96, 96, 96],
    "voxel_size": 2.0,
    "layout": "swift_v1",
    "normalisation": "zscore_global",
    "template": "MNI152NLin6Asym",
}


class ContractError(ValueError):
    """Data does not match the input contract a checkpoint was trained with."""


class TemplateMismatchWarning(UserWarning):
    """Data in another MNI template than the checkpoint was trained on (escalate with
    ``warnings.simplefilter("error", TemplateMismatchWarning)`` or
    ``template_mismatch="error"``)."""


class CheckpointError(ValueError):
    """A file is not a usable checkpoint for what was asked."""


def check_contract(
    expected: dict | None, actual: dict, what: str = "data", template_mismatch: str = "warn"
) -> None:
    """Refuse ``actual`` (a store's ``contract()``) unless it matches the checkpoint's
    ``expected`` contract: grid, voxel size, space, layout and normalisation equal; TR range
    inside the trained range widened by 10 %. A contract without a layout (written before
    layouts existed) means ``mni_ras``.

    Templates: when both name a template and they differ, ``template_mismatch`` decides —
    ``"warn"`` (:class:`TemplateMismatchWarning`), ``"error"`` (:class:`ContractError`) or
    ``"ignore"``; an ``unknown`` template on either side cannot be checked (logged).
    """
    check_choice("template_mismatch", template_mismatch, TEMPLATE_POLICIES)
    if not expected:
        return
    if "layout" in expected or "layout" in actual:  # a store contract without one predates layouts
        expected, actual = (
            ({"layout": _DEFAULT_LAYOUT, **c} if "grid" in c else c) for c in (expected, actual)
        )
    diffs, fixes = [], []
    for key in _CONTRACT_FIELDS:
        if key in expected and key in actual and _norm(expected[key]) != _norm(actual[key]):
            diffs.append(f"{key}: checkpoint expects {expected[key]!r}, {what} has {actual[key]!r}")
            fixes.append(_fix_flag(key, expected[key]))
    if "tr_range" in expected and "tr_range" in actual:
        lo, hi = expected["tr_range"]
        slack = 0.1 * max(hi, 1e-6)
        a_lo, a_hi = actual["tr_range"]
        if a_lo < lo - slack or a_hi > hi + slack:
            diffs.append(
                f"tr_range: checkpoint trained on TR {lo:g}–{hi:g} s, {what} has {a_lo:g}–{a_hi:g} "
                "s"
            )
            fixes.append(f"--target-tr {round((lo + hi) / 2, 3):g}")
    template_msg = _template_mismatch(expected, actual, what)
    if template_msg and template_mismatch == "error":
        diffs.append(template_msg)
        fixes.append(_fix_flag("template", expected["template"]))
    if diffs:
        fix = " ".join(f for f in fixes if f)
        raise ContractError(
            f"{what} breaks the checkpoint's normalisation contract — "
            + "; ".join(diffs)
            + f". Preprocess the data with the checkpoint's settings (swiftlib preprocess {fix})."
        )
    denoised = [c.get("denoise") for c in (expected, actual)]
    if None not in denoised and denoised[0] != denoised[1]:
        warnings.warn(
            f"denoise: checkpoint trained on data denoised {denoised[0]!r}, {what} is denoised "
            f"{denoised[1]!r} (swiftlib preprocess --denoise) — the signal the model learned from "
            "may differ",
            UserWarning,
            stacklevel=2,
        )
    if template_msg and template_mismatch == "warn":
        warnings.warn(
            template_msg + " — predictions may degrade; pass template_mismatch='error' to refuse "
            "such data, or preprocess data registered to the checkpoint's template",
            TemplateMismatchWarning,
            stacklevel=2,
        )


def _template_mismatch(expected: dict, actual: dict, what: str) -> str | None:
    """The message for two different known templates, else None (unknown ones are logged)."""
    want = expected.get("template", _UNKNOWN_TEMPLATE)
    have = actual.get("template", _UNKNOWN_TEMPLATE)
    if want == have:
        return None
    if _UNKNOWN_TEMPLATE in (want, have):
        log.info("template not checked: checkpoint trained on %s, %s is in %s", want, what, have)
        return None
    return f"template: checkpoint trained on {want!r}, {what} is in {have!r}"


def _fix_flag(key: str, value) -> str:
    flag = _FIX_FLAGS.get(key)
    if flag is None:
        return ""
    if isinstance(value, (list, tuple)):
        return f"{flag} {' '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}"
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


def _norm(v):
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else v


def resolve_checkpoint(path) -> Path:
    """The file to read for checkpoint argument ``path``: the file itself, or for a DeepSpeed
    checkpoint directory (ZeRO 1/2/3, as Lightning's DeepSpeed strategy writes ``best.ckpt/``)
    its consolidated fp32 copy, converted once and cached beside it
    (:func:`swiftlib.training.deepspeed.consolidated_checkpoint`)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        from swiftlib.training.deepspeed import consolidated_checkpoint, is_deepspeed_checkpoint

        if is_deepspeed_checkpoint(p):
            return consolidated_checkpoint(p)
        raise CheckpointError(
            f"checkpoint {str(p)!r} is a folder but not a DeepSpeed checkpoint (no 'latest' file, "
            "no */*model_states.pt); expected a .ckpt file or the folder a DeepSpeed run writes "
            "for one"
        )
    raise CheckpointError(f"checkpoint {str(p)!r} does not exist")


def read_checkpoint(path) -> dict:
    """``torch.load(weights_only=True)`` of a checkpoint file or DeepSpeed directory (through
    :func:`resolve_checkpoint`), with a clear error for anything else. Lightning-wrapped keys
    (``_forward_module.``, from a hand-converted DeepSpeed file) are unwrapped."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a checkpoint we can read"
        raise CheckpointError(
            f"{p}: not a readable weights-only torch checkpoint ({type(e).__name__}: "
            f"{str(e)[:200]}); expected a .ckpt written by swiftlib/Lightning (a file or a "
            "DeepSpeed folder) or a state_dict saved with torch.save"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{p}: holds a {type(ckpt).__name__}; expected a dict (a checkpoint or a state_dict)"
        )
    state = ckpt.get("state_dict")
    if isinstance(state, dict) and any(k.startswith("_forward_module.") for k in state):
        ckpt["state_dict"] = {k.removeprefix("_forward_module."): v for k, v in state.items()}
    return ckpt


def build_encoder(cfg) -> tuple[nn.Module, dict | None]:
    """A task's encoder: preset ``cfg.model`` with ``cfg.model_overrides``, without a head,
    initialised from ``cfg.init_from`` when set (checked against ``cfg.contract``, with the
    config's ``template_mismatch`` policy where it has one, else ``"warn"``). Returns
    ``(encoder, load report or None)``."""
    from swiftlib.models import create_model

    encoder = create_model(cfg.model, **{**cfg.model_overrides, "num_classes": 0})
    if not cfg.init_from:
        return encoder, None
    report = load_encoder_weights(
        encoder,
        cfg.init_from,
        cfg.model,
        cfg.model_overrides,
        cfg.contract,
        template_mismatch=getattr(cfg, "template_mismatch", "warn"),
    )
    return encoder, report


def load_encoder_weights(
    encoder: nn.Module,
    path,
    model_name: str,
    model_overrides: dict | None = None,
    contract: dict | None = None,
    template_mismatch: str = "warn",
) -> dict:
    """Initialise ``encoder`` from a checkpoint (weights only): a swiftlib SimMIM or
    fine-tuning checkpoint, or a public SwiFT v1 Lightning checkpoint.

    Checks the checkpoint was made for the same preset and options and that ``contract``
    (the data of this run) matches the checkpoint's — for a SwiFT v1 checkpoint, which has
    no contract of its own, :data:`SWIFT_V1_CONTRACT` (the ``swift_v1`` layout).
    ``template_mismatch``: see :func:`check_contract`. Returns the load report.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt.get(CHECKPOINT_KEY)
    state = ckpt.get("state_dict", ckpt)
    if meta is None:  # a foreign checkpoint: only SwiFT v1 ones are understood
        from swiftlib.models import load_checkpoint

        if not model_name.startswith("swift_v1"):
            raise CheckpointError(
                f"{path}: not a swiftlib checkpoint (no {CHECKPOINT_KEY!r} metadata); foreign "
                f"checkpoints load only into swift_v1 presets, this run builds {model_name!r}"
            )
        _check_swift_v1_input(path, contract, template_mismatch)
        report = load_checkpoint(encoder, resolve_checkpoint(path))
        if not report["loaded"]:
            raise CheckpointError(
                f"{path}: no SwiFT v1 encoder weights found (keys like model.patch_embed…)"
            )
        return report
    if meta.get("model") != model_name or (meta.get("model_overrides") or {}) != (
        model_overrides or {}
    ):
        raise CheckpointError(
            f"{path}: made for model {meta.get('model')!r} with options "
            f"{meta.get('model_overrides') or {}}; this run builds {model_name!r} with "
            f"{model_overrides or {}} — use the same preset and options"
        )
    check_contract(
        meta.get("contract"),
        contract or {},
        what="this run's data",
        template_mismatch=template_mismatch,
    )
    prefix = {"pretrain": "model.encoder.", "finetune": "model.", "contrastive": "model."}.get(
        meta.get("kind")
    )
    if prefix is None:
        raise CheckpointError(
            f"{path}: unknown checkpoint kind {meta.get('kind')!r}; expected pretrain, "
            "contrastive or finetune"
        )
    enc_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = encoder.state_dict()
    head_keys = {k for k in own if k.startswith("head.")}
    enc_state = {k: v for k, v in enc_state.items() if k not in head_keys}
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in enc_state.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise CheckpointError(f"{path}: tensor shapes differ from this model: {bad[:5]}")
    result = encoder.load_state_dict(enc_state, strict=False)
    missing = [k for k in result.missing_keys if k not in head_keys]
    if missing:
        raise CheckpointError(f"{path}: encoder weights missing from the checkpoint: {missing[:8]}")
    report = {
        "loaded": sorted(enc_state),
        "missing": missing,
        "unexpected": list(result.unexpected_keys),
        "kind": meta.get("kind"),
    }
    log.info(
        "initialised encoder from %s checkpoint %s (%d tensors)",
        meta.get("kind"),
        path,
        len(enc_state),
    )
    return report


def _check_swift_v1_input(path, contract: dict | None, template_mismatch: str) -> None:
    """A SwiFT v1 checkpoint learned v1's input convention: refuse data in another layout
    (a mirrored, shifted brain loads without error and silently degrades the transfer)."""
    if not contract:
        log.warning(
            "%s: SwiFT v1 checkpoint loaded without the data's contract; it expects the "
            "'swift_v1' layout (swiftlib preprocess --layout swift_v1)",
            path,
        )
        return
    layout = contract.get("layout", _DEFAULT_LAYOUT)
    if layout != SWIFT_V1_CONTRACT["layout"]:
        raise ContractError(
            f"{path} is a SwiFT v1 checkpoint: it was trained on v1's input convention (layout "
            "'swift_v1': LAS voxel order, the MNI 91×109×91 2 mm grid padded/cropped to 96³, v1's "
            f"global z-score), but this run's data has layout {layout!r} — the brain it sees would "
            "be mirrored left-right and shifted. Preprocess the data again with `swiftlib "
            "preprocess --layout swift_v1` (PreprocessConfig(layout='swift_v1')) and train on that "
            "store."
        )
    check_contract(
        SWIFT_V1_CONTRACT, contract, what="this run's data", template_mismatch=template_mismatch
    )


def rng_state() -> dict:
    """Python, NumPy and torch (CPU + CUDA) RNG states, storable in a weights-only checkpoint."""
    state = {
        "python": repr(random.getstate()),
        "numpy": {
            k: v.tolist() if isinstance(v, np.ndarray) else v
            for k, v in zip(("name", "keys", "pos", "has_gauss", "cached"), np.random.get_state())
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(ast.literal_eval(state["python"])))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


class CheckpointMetaMixin:
    """For the tasks: writes ``checkpoint["swiftlib"]`` (kind, model, options, contract, RNG
    state, plus :meth:`checkpoint_meta`) and restores the RNG state on load, which exact
    ``resume_from`` needs. The task defines ``checkpoint_kind`` and ``self.cfg``."""

    checkpoint_kind: str

    def _set_config(self, config, config_cls):
        """``self.cfg`` from a config or its dict, saved as the ``config`` hyper-parameter so
        ``load_from_checkpoint`` rebuilds the task (STYLE rule 10); returns it."""
        self.cfg = config_cls.from_dict(config) if isinstance(config, dict) else config
        self.save_hyperparameters({"config": self.cfg.to_dict()})
        return self.cfg

    def checkpoint_meta(self) -> dict:
        return {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "kind": self.checkpoint_kind,
            "model": self.cfg.model,
            "model_overrides": dict(self.cfg.model_overrides),
            **self.checkpoint_meta(),
            "contract": self.cfg.contract,
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY) or {}
        if "rng" in meta:
            set_rng_state(meta["rng"])
