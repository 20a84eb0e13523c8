"""A swiftlib checkpoint ready for inference, and the store windows it reads.

:func:`load_inference_model` rebuilds a checkpoint's model, weights only. A fine-tuning
checkpoint gives the encoder *and* its head (``kind == "finetune"``); a SimMIM pretraining
checkpoint gives the encoder alone (``kind == "pretrain"``, weights under
``model.encoder.``). Nothing is unpickled: the task is rebuilt from the config stored in
``hyper_parameters`` and the tensors are loaded with ``torch.load(weights_only=True)``.

:func:`load_inference_inputs` is the one path from "checkpoint + store + subjects" to a
model on its device, checked against the store's contract, and the window layout it was
trained on; attributions and embeddings both start there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from swiftlib.interpret.config import PRECISIONS, InferenceConfig
from swiftlib.interpret.subjects import as_store, check_subjects
from swiftlib.tasks.common import (
    CHECKPOINT_KEY,
    CheckpointError,
    check_contract,
    read_checkpoint,
    resolve_checkpoint,
)

__all__ = [
    "PRECISIONS",
    "InferenceModel",
    "InferenceInputs",
    "load_inference_model",
    "load_inference_inputs",
    "resolve_device",
    "autocast_context",
    "model_frames",
    "model_frame_step",
]

log = logging.getLogger(__name__)


@dataclass
class InferenceModel:
    """An encoder (+ head) rebuilt from a checkpoint, in eval mode.

    Attributes:
        module: the ``FinetuneTask`` (finetune) or the bare encoder (pretrain).
        kind: ``"finetune"`` or ``"pretrain"``.
        meta: ``checkpoint["swiftlib"]`` (model, label, task, num_classes, contract, …).
        config: the task config stored in the checkpoint (``hyper_parameters["config"]``).
        path: the checkpoint file.
        data: the data config the model was trained with (``datamodule_hyper_parameters
            ["data"]``; empty for checkpoints without it): its window layout is the input
            the model knows.
    """

    module: nn.Module
    kind: str
    meta: dict
    config: dict = field(default_factory=dict)
    path: str = ""
    data: dict = field(default_factory=dict)

    @property
    def encoder(self) -> nn.Module:
        return self.module.model if self.kind == "finetune" else self.module

    @property
    def num_features(self) -> int:
        return int(self.encoder.num_features)

    @property
    def contract(self) -> dict | None:
        return self.meta.get("contract")

    @property
    def label(self) -> str | None:
        return self.meta.get("label") if self.kind == "finetune" else None

    @property
    def task(self) -> str | None:
        return self.meta.get("task") if self.kind == "finetune" else None

    @property
    def num_outputs(self) -> int:
        """Outputs of the head (classes, or 1 for regression); 0 without a head."""
        if self.kind != "finetune":
            return 0
        return int(self.meta.get("num_classes", 2)) if self.task == "classification" else 1

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, 1, D, H, W, T) -> (B, num_features)`` pooled final-stage embedding."""
        enc = self.encoder
        return enc.forward_head(enc.forward_features(x), pre_logits=True)

    def embed_stages(
        self, x: torch.Tensor, stages: Sequence[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final embedding and the mean-pooled outputs of ``stages``: ``(B, F)``, ``[(B, C_i)]``."""
        enc = self.encoder
        final, inter = enc.forward_intermediates(x, indices=list(stages))
        # (B, C_i, D_i, H_i, W_i, T_i) -> (B, C_i)
        pooled = [t.mean(dim=(2, 3, 4, 5)) for t in inter]
        return enc.forward_head(final, pre_logits=True), pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Head output ``(B, num_outputs)``: logits or the standardised regression value."""
        if self.kind != "finetune":
            raise CheckpointError(
                f"{self.path}: a {self.kind!r} checkpoint has no prediction head; attributions "
                "need a fine-tuning checkpoint (kind 'finetune') trained on the label you want "
                "to explain"
            )
        return self.module(x)

    def check_store(self, store) -> None:
        """Refuse a store whose contract differs from the checkpoint's (``ContractError``)."""
        check_contract(
            self.contract,
            store.contract(),
            what=f"store {store.root}",
            template_mismatch=self.meta.get("template_mismatch", "warn"),
        )

    def to(self, device) -> InferenceModel:
        self.module.to(device)
        return self


def load_inference_model(checkpoint, device: str | torch.device = "cpu") -> InferenceModel:
    """Rebuild the model of a swiftlib checkpoint (``best.ckpt`` / ``last.ckpt``), eval mode.

    A DeepSpeed checkpoint folder is read through its consolidated fp32 copy (converted on
    first use). Raises :class:`~swiftlib.tasks.common.CheckpointError` for files that are not
    swiftlib fine-tuning or pretraining checkpoints.
    """
    path = resolve_checkpoint(checkpoint)
    ckpt = read_checkpoint(path)
    meta = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path}: no {CHECKPOINT_KEY!r} metadata; expected a checkpoint written by swiftlib's "
            "fit() (for a public SwiFT v1 checkpoint, fine-tune it first with task.init_from)"
        )
    kind = meta.get("kind")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: has no 'state_dict'; expected a Lightning checkpoint written by fit()"
        )
    config = dict((ckpt.get("hyper_parameters") or {}).get("config") or {})
    if kind == "finetune":
        from swiftlib.tasks.finetune import FinetuneTask

        if not config:
            raise CheckpointError(
                f"{path}: no hyper_parameters['config']; cannot rebuild the fine-tuning task"
            )
        config["init_from"] = None  # the weights below replace any initialisation
        module: nn.Module = FinetuneTask(config)
        missing, unexpected = module.load_state_dict(state, strict=False)
    elif kind in ("pretrain", "contrastive"):  # the encoder alone
        from swiftlib.models import create_model

        overrides = {**(meta.get("model_overrides") or {}), "num_classes": 0}
        module = create_model(meta["model"], **overrides)
        prefix = {"pretrain": "model.encoder.", "contrastive": "model."}[kind]
        enc_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(enc_state, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
    else:
        raise CheckpointError(
            f"{path}: checkpoint kind {kind!r}; expected 'finetune', 'pretrain' or 'contrastive'"
        )
    if missing:
        raise CheckpointError(
            f"{path}: weights missing for {len(missing)} tensors of "
            f"{meta.get('model')!r}: {missing[:5]}"
        )
    if unexpected:
        log.debug("ignoring %d unexpected tensors in %s", len(unexpected), path)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    data = dict((ckpt.get("datamodule_hyper_parameters") or {}).get("data") or {})
    model = InferenceModel(
        module=module, kind=kind, meta=meta, config=config, path=str(path), data=data
    )
    log.info(
        "loaded %s checkpoint %s (model %s, %d features)",
        kind,
        path,
        meta.get("model"),
        model.num_features,
    )
    return model.to(resolve_device(device))


def resolve_device(device) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_context(precision: str, device: torch.device):
    """``fp32``: no autocast; ``bf16``: ``torch.autocast`` in bfloat16 on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# the window layout a model was trained on
# ---------------------------------------------------------------------------------------------


def model_frames(model: InferenceModel) -> int:
    """Frames per window the model was trained on: ``data.sequence_length`` of the
    checkpoint's data config, else of the run's ``config.yaml`` beside ``checkpoints/``,
    else the preset's ``img_size`` T."""
    seq = _trained_data(model).get("sequence_length")
    if seq:
        return int(seq)
    size = getattr(getattr(model.encoder, "cfg", None), "img_size", None)
    if not size:
        raise ValueError("cannot tell the model's window length; pass sequence_length=")
    return int(size[-1])


def model_frame_step(model: InferenceModel) -> int:
    """The frame step inside a window the model was trained on (``data.stride_within_seq``;
    1 when unknown). A model trained on every 3rd frame sees a different time scale in
    consecutive frames, so explaining or embedding it must read windows the same way."""
    return int(_trained_data(model).get("stride_within_seq") or 1)


def _trained_data(model: InferenceModel) -> dict:
    import yaml

    if model.data:
        return model.data
    cfg_path = Path(model.path).resolve().parent.parent / "config.yaml" if model.path else None
    if cfg_path is not None and cfg_path.is_file():
        return dict((yaml.safe_load(cfg_path.read_text()) or {}).get("data") or {})
    return {}


# ---------------------------------------------------------------------------------------------
# checkpoint + store + subjects -> model and windows
# ---------------------------------------------------------------------------------------------


@dataclass
class InferenceInputs:
    """A model ready to read some subjects' windows (what :func:`load_inference_inputs` returns).

    Attributes:
        model: the checkpoint's model, eval mode, on ``device``.
        store: the open store (its contract checked against the checkpoint's).
        subject_ids: the subjects, checked to be in the store, in the order given.
        device: where the model lives and batches go.
        sequence_length, stride_between_seq, stride_within_seq: the window layout
            (resolved: the config's values, else how the model was trained).
        config: the settings used (precision, batch size, progress, …).
    """

    model: InferenceModel
    store: object
    subject_ids: list[str]
    device: torch.device
    sequence_length: int
    stride_between_seq: float
    stride_within_seq: int
    config: InferenceConfig = field(default_factory=InferenceConfig)

    def windows(self, subject_ids: Sequence[str] | None = None, label: str | None = None):
        """Evaluation windows (``WindowDataset``, every window in order) of ``subject_ids``
        (default: all of :attr:`subject_ids`); ``label`` fills ``y`` (None: NaN)."""
        from swiftlib.data.windows import WindowDataset

        ids = self.subject_ids if subject_ids is None else list(subject_ids)
        return WindowDataset(
            self.store,
            ids,
            sequence_length=self.sequence_length,
            stride_between_seq=self.stride_between_seq,
            stride_within_seq=self.stride_within_seq,
            label=label,
            mode="eval",
        )

    def autocast(self):
        """The config's precision as an autocast context on :attr:`device`."""
        return autocast_context(self.config.precision, self.device)


def load_inference_inputs(
    checkpoint, store, subjects: Sequence[str] | str, config: InferenceConfig | None = None
) -> InferenceInputs:
    """Checkpoint + store + subjects → a model on its device and the windows to read.

    Args:
        checkpoint: a swiftlib checkpoint file or DeepSpeed folder, or an
            :class:`InferenceModel` (moved to the config's device).
        store: an open store or its path; must satisfy the checkpoint's contract
            (``ContractError`` otherwise).
        subjects: store subject ids (unknown ids fail naming them).
        config: an :class:`~swiftlib.interpret.config.InferenceConfig` (or a subclass):
            device, window layout; None = defaults.

    Returns:
        :class:`InferenceInputs`; its ``windows()`` reads the layout the model was trained
        on unless the config sets ``sequence_length`` / ``stride_within_seq``.
    """
    config = config if config is not None else InferenceConfig()
    store = as_store(store)
    device = resolve_device(config.device)
    if isinstance(checkpoint, InferenceModel):
        model = checkpoint.to(device)
    else:
        model = load_inference_model(checkpoint, device=device)
    model.check_store(store)
    ids = check_subjects(store, subjects)
    return InferenceInputs(
        model=model,
        store=store,
        subject_ids=ids,
        device=device,
        sequence_length=int(config.sequence_length or model_frames(model)),
        stride_between_seq=float(config.stride_between_seq),
        stride_within_seq=int(config.stride_within_seq or model_frame_step(model)),
        config=config,
    )
