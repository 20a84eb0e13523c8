"""Loading a swiftlib checkpoint for inference (embeddings, attributions), weights only.

A fine-tuning checkpoint gives the encoder *and* its head (``kind == "finetune"``); a
SimMIM pretraining checkpoint gives the encoder alone (``kind == "pretrain"``, weights
under ``model.encoder.``). Nothing is unpickled: the task is rebuilt from the config
stored in ``hyper_parameters`` and the tensors are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from swiftlib.tasks.common import (
    CHECKPOINT_KEY,
    CheckpointError,
    check_contract,
    read_checkpoint,
    resolve_checkpoint,
)

__all__ = ["InferenceModel", "load_inference_model", "resolve_device", "autocast_context", "check_subjects",
           "PRECISIONS"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


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

    def embed_stages(self, x: torch.Tensor, stages: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final embedding and the mean-pooled outputs of ``stages``: ``(B, F)``, ``[(B, C_i)]``."""
        enc = self.encoder
        final, inter = enc.forward_intermediates(x, indices=list(stages))
        pooled = [t.mean(dim=(2, 3, 4, 5)) for t in inter]  # (B, C_i, D_i, H_i, W_i, T_i) -> (B, C_i)
        return enc.forward_head(final, pre_logits=True), pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Head output ``(B, num_outputs)``: logits or the standardised regression value."""
        if self.kind != "finetune":
            raise CheckpointError(
                f"{self.path}: a {self.kind!r} checkpoint has no prediction head; attributions need a "
                "fine-tuning checkpoint (kind 'finetune') trained on the label you want to explain")
        return self.module(x)

    def check_store(self, store) -> None:
        """Refuse a store whose contract differs from the checkpoint's (``ContractError``)."""
        check_contract(self.contract, store.contract(), what=f"store {store.root}")

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
            f"{path}: no {CHECKPOINT_KEY!r} metadata; expected a checkpoint written by swiftlib's fit() "
            "(for a public SwiFT v1 checkpoint, fine-tune it first with task.init_from)")
    kind = meta.get("kind")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: has no 'state_dict'; expected a Lightning checkpoint written by fit()")
    config = dict((ckpt.get("hyper_parameters") or {}).get("config") or {})
    if kind == "finetune":
        from swiftlib.tasks.finetune import FinetuneTask

        if not config:
            raise CheckpointError(f"{path}: no hyper_parameters['config']; cannot rebuild the fine-tuning task")
        config["init_from"] = None  # the weights below replace any initialisation
        module: nn.Module = FinetuneTask(config)
        missing, unexpected = module.load_state_dict(state, strict=False)
    elif kind == "pretrain":
        from swiftlib.models import create_model

        module = create_model(meta["model"], **{**(meta.get("model_overrides") or {}), "num_classes": 0})
        prefix = "model.encoder."
        enc_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(enc_state, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
    else:
        raise CheckpointError(f"{path}: checkpoint kind {kind!r}; expected 'finetune' or 'pretrain'")
    if missing:
        raise CheckpointError(f"{path}: weights missing for {len(missing)} tensors of {meta.get('model')!r}: {missing[:5]}")
    if unexpected:
        log.debug("ignoring %d unexpected tensors in %s", len(unexpected), path)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    data = dict((ckpt.get("datamodule_hyper_parameters") or {}).get("data") or {})
    model = InferenceModel(module=module, kind=kind, meta=meta, config=config, path=str(path), data=data)
    log.info("loaded %s checkpoint %s (model %s, %d features)", kind, path, meta.get("model"), model.num_features)
    return model.to(resolve_device(device))


def resolve_device(device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_context(precision: str, device: torch.device):
    """``fp32``: no autocast; ``bf16``: ``torch.autocast`` in bfloat16 on ``device``."""
    import contextlib

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def check_subjects(store, subjects) -> list[str]:
    """``subjects`` as a list of store subject ids; unknown ids fail naming them."""
    import difflib

    if isinstance(subjects, str):
        subjects = [subjects]
    ids = [str(s) for s in subjects]
    if not ids:
        raise ValueError("subjects is empty; expected at least one subject id of the store")
    known = set(store.subject_ids)
    unknown = [s for s in ids if s not in known]
    if unknown:
        near = difflib.get_close_matches(unknown[0], store.subject_ids, n=3)
        hint = f" (did you mean {near} for {unknown[0]!r}?)" if near else ""
        raise ValueError(
            f"{len(unknown)} subject(s) are not in store {store.root}: {unknown[:10]}{hint}; "
            f"the store has {len(known)} subjects (store.subject_ids)")
    return ids
