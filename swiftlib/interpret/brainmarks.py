"""swiftlib checkpoints inside the brainmarks fMRI foundation-model benchmark suite.

`brainmarks <https://github.com/MedARC-AI/Brainmarks>`_ (formerly ``fmri-fm-eval``) compares
fMRI encoders on frozen embeddings. A model enters it as a *(transform, wrapper)* pair made by
a constructor registered in ``brainmarks.models.registry``; the suite finds constructors by
importing every module of the ``brainmarks.models`` **namespace package**, from whichever
installed distribution provides it. swiftlib ships such a module
(``brainmarks/models/swiftlib.py`` in this repository, installed with swiftlib), so with
both packages installed the suite lists a model named ``swiftlib``::

    python -m brainmarks.main_probe ... model=swiftlib \\
        model_kwargs.ckpt_path=runs/pretrain/checkpoints/best.ckpt

This module holds everything behind that plugin and imports nothing from brainmarks, so it is
tested without the suite installed.

The suite's interface (``brainmarks.models.base``):

* a **sample** in space ``"mni"``: ``bold (T, V)`` float, the ``V`` voxels inside the
  MNI152NLin6Asym 2 mm brain mask (TemplateFlow ``res-02 desc-brain mask``, 91 × 109 × 91,
  RAS+, origin (−90, −126, −72) mm), in C order of the ``(Z, Y, X)`` array, each voxel
  z-scored over time; ``mean (1, V)`` and ``std (1, V)`` undo that; ``tr`` in seconds.
* a **ModelTransform**: ``sample -> sample`` (model-specific input), applied per sample before
  ``default_collate``; ``fit(dataset)`` is optional (not needed here).
* a **ModelWrapper**: an ``nn.Module`` with ``__space__ = "mni"`` whose ``forward(batch)``
  returns ``Embeddings(cls_embeds (B, 1, F) | None, reg_embeds (B, R, F) | None,
  patch_embeds (B, L, F) | None)``.

What :class:`SwiftlibTransform` does, so a checkpoint sees the input it was trained on (its
normalisation contract, :func:`swiftlib.tasks.common.check_contract`):

1. undo the suite's per-voxel z-score (``bold * std + mean``): swiftlib normalises the raw
   BOLD itself;
2. **TR**: when the sample's TR lies outside the checkpoint's trained TR range (widened by
   10 %, the contract's slack), resample it in time to the range's centre with the store's
   method (``swiftlib preprocess --target-tr``: ``scipy.signal.resample_poly``)
   (``target_tr="auto"``; a number forces that TR; ``None`` refuses instead);
3. **windows**: ``max_windows`` non-overlapping windows of the model's ``sequence_length``
   frames at its ``stride_within_seq``; a scan shorter than one window is padded with its
   temporal mean (as the suite's own SwiFT wrapper does);
4. **grid**: scatter the ``V`` voxels into the 91 × 109 × 91 MNI volume, then the store path
   of :func:`swiftlib.data.preprocess.prepare_subject` — the layout's voxel order (RAS+ for
   ``mni_ras``; LAS, padded/cropped to 96³ for ``swift_v1``), the store grid and voxel size
   (integer crop/pad on the lattice, nilearn resampling off it), brain mask, the contract's
   normalisation and background fill, and fp16 rounding as the store keeps it. The
   normalisation statistics are those of the frames the windows cover;
5. the template: the suite's data are MNI152NLin6Asym; a checkpoint trained on another
   template is warned about (``template_mismatch="warn"``) or refused (``"error"``).

:class:`SwiftlibWrapper` runs the encoder over the windows and returns
``cls_embeds (B, 1, F)`` = the encoder's pooled embedding (``forward_head(pre_logits=True)``,
what :class:`~swiftlib.interpret.embeddings.EmbeddingAdapter` and ``extract_embeddings``
give) averaged over a scan's windows, as swiftlib's evaluation averages them;
``patch_embeds (B, nW·D'·H'·W'·T', F)`` = the final-stage tokens after the final norm (whose
mean the pooled embedding is), windows concatenated; ``reg_embeds = None`` (no registers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from swiftlib.interpret.inference import (
    InferenceModel,
    autocast_context,
    load_inference_model,
    model_frame_step,
    model_frames,
)
from swiftlib.tasks.common import ContractError, check_contract

__all__ = [
    "SPACE",
    "MNI152_2MM_SHAPE",
    "MNI152_2MM_AFFINE",
    "SUITE_TEMPLATE",
    "Embeddings",
    "SwiftlibTransform",
    "SwiftlibWrapper",
    "load_suite_mask",
    "unmask",
    "resample_tr",
    "create_swiftlib_model",
]

log = logging.getLogger(__name__)

#: The suite's space name for whole-brain MNI volumes.
SPACE = "mni"
#: The suite's MNI grid: MNI152NLin6Asym 2 mm, RAS+ (``brainmarks.readers``).
MNI152_2MM_SHAPE = (91, 109, 91)
MNI152_2MM_AFFINE = np.array(
    [[2.0, 0, 0, -90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1.0]]
)
SUITE_TEMPLATE = "MNI152NLin6Asym"
_TR_SLACK = 0.1  # the contract's TR tolerance (check_contract): 10 % of the range's top


class Embeddings(NamedTuple):
    """The suite's embedding triple (same fields, same order as ``brainmarks.models.base``)."""

    cls_embeds: Tensor | None  # (B, 1, F)
    reg_embeds: Tensor | None  # (B, R, F)
    patch_embeds: Tensor | None  # (B, L, F)


# ---------------------------------------------------------------------------------------------
# the suite's voxel space
# ---------------------------------------------------------------------------------------------


def load_suite_mask(mask=None) -> np.ndarray:
    """The suite's ``mni`` brain mask as a boolean ``(X, Y, Z)`` RAS+ array, 91 × 109 × 91.

    Args:
        mask: ``None``: TemplateFlow's ``tpl-MNI152NLin6Asym_res-02_desc-brain_mask`` (what
            the suite uses; ``templateflow`` is one of its dependencies); a NIfTI path (any
            voxel order: reoriented, never resampled); or an array ``(X, Y, Z)`` in RAS+.
    """
    import nibabel as nib

    if mask is None:
        try:
            from templateflow import api as tflow
        except ImportError:
            raise ImportError(
                "the brainmarks 'mni' mask comes from TemplateFlow (MNI152NLin6Asym res-02 "
                "desc-brain mask): pip install templateflow, or pass mask_path= a NIfTI of that "
                "mask"
            ) from None
        mask = tflow.get(
            SUITE_TEMPLATE, desc="brain", resolution=2, suffix="mask", extension="nii.gz"
        )
    if isinstance(mask, (str, Path)):
        path = str(mask)
        if not Path(path).is_file():
            raise FileNotFoundError(f"mask_path={path!r}: no such file; expected a NIfTI mask")
        img = nib.as_closest_canonical(nib.load(path))
        if img.shape[:3] != MNI152_2MM_SHAPE or not np.allclose(img.affine, MNI152_2MM_AFFINE):
            raise ValueError(
                f"mask_path={path!r}: shape {img.shape} and affine {img.affine.tolist()} in RAS+; "
                f"expected the suite's MNI152NLin6Asym 2 mm grid {MNI152_2MM_SHAPE} with affine "
                f"{MNI152_2MM_AFFINE.tolist()}"
            )
        mask = np.asanyarray(img.dataobj)
    arr = np.asarray(mask)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.shape != MNI152_2MM_SHAPE:
        raise ValueError(
            f"mask: shape {arr.shape}; expected {MNI152_2MM_SHAPE} (X, Y, Z) in RAS+, the suite's "
            "MNI152NLin6Asym 2 mm grid"
        )
    return arr > 0


def unmask(bold: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The suite's ``bold (T, V)`` → a RAS+ volume ``(X, Y, Z, T)`` float32, zero outside.

    The suite reads volumes as ``(T, Z, Y, X)`` and keeps ``[:, mask_zyx]``, so voxel ``j`` is
    the ``j``-th brain voxel in C order of ``(Z, Y, X)``.
    """
    bold = np.asarray(bold, dtype=np.float32)
    mask_zyx = np.ascontiguousarray(mask.T)  # (Z, Y, X)
    num_voxels = int(mask_zyx.sum())
    if bold.ndim != 2 or bold.shape[1] != num_voxels:
        raise ValueError(
            f"bold: shape {bold.shape}; expected (T, {num_voxels}): one column per voxel of the "
            "'mni' brain mask (is the dataset in another space, or the mask another one?)"
        )
    T = bold.shape[0]
    vol = np.zeros((T, *mask_zyx.shape), dtype=np.float32)  # (T, Z, Y, X)
    vol[:, mask_zyx] = bold
    return vol.transpose(3, 2, 1, 0)  # (T, Z, Y, X) -> (X, Y, Z, T)


def resample_tr(bold: np.ndarray, tr: float, target_tr: float) -> np.ndarray:
    """``bold (T, V)`` sampled every ``tr`` s → every ``target_tr`` s over the same span, by
    the store's method (:func:`swiftlib.data.temporal.resample_time`: ``resample_poly``), so
    the model sees time resampled as ``swiftlib preprocess --target-tr`` resamples it."""
    from swiftlib.data.temporal import resample_time

    out, _ = resample_time(np.ascontiguousarray(np.asarray(bold).T), tr, target_tr)  # (V, T')
    return np.ascontiguousarray(out.T)  # (T', V)


# ---------------------------------------------------------------------------------------------
# the transform: suite sample -> swiftlib input
# ---------------------------------------------------------------------------------------------


class SwiftlibTransform:
    """The suite's ``mni`` sample → the input a swiftlib checkpoint was trained on.

    Args:
        contract: the checkpoint's normalisation contract (``grid``, ``voxel_size``,
            ``layout``, ``normalisation``, ``template``, ``tr_range``).
        sequence_length: frames per window (the model's).
        stride_within_seq: frame step inside a window (the model's; 1 = consecutive).
        max_windows: most windows per scan (the suite collates equal shapes: scans of one
            dataset have one length).
        mask: the suite's mask (see :func:`load_suite_mask`); ``None`` = TemplateFlow's.
        target_tr: ``"auto"`` (resample only when the TR lies outside the contract's range),
            a TR in seconds (always resample to it) or ``None`` (never; out-of-range TRs are
            refused).
        template_mismatch: ``"warn"``, ``"error"`` or ``"ignore"`` when the checkpoint was
            trained on another template than the suite's MNI152NLin6Asym.

    ``__call__(sample)`` returns the sample with ``bold`` replaced by
    ``(1, D, H, W, nW · sequence_length)`` float32 (channel first, windows back to back).
    """

    def __init__(
        self,
        contract: dict,
        sequence_length: int,
        stride_within_seq: int = 1,
        max_windows: int = 8,
        mask=None,
        target_tr: float | str | None = "auto",
        template_mismatch: str = "warn",
    ):
        if not isinstance(contract, dict) or "grid" not in contract:
            raise ContractError(
                f"contract={contract!r}: expected the checkpoint's normalisation contract (a dict "
                "with grid, voxel_size, layout, normalisation); checkpoints written by swiftlib's "
                "fit() carry one"
            )
        for name, value in (
            ("sequence_length", sequence_length),
            ("stride_within_seq", stride_within_seq),
            ("max_windows", max_windows),
        ):
            if int(value) < 1:
                raise ValueError(f"{name}={value}: expected a positive number of frames/windows")
        if not (target_tr in (None, "auto") or float(target_tr) > 0):
            raise ValueError(f"target_tr={target_tr!r}: expected 'auto', None or seconds > 0")
        self.contract = dict(contract)
        self.sequence_length = int(sequence_length)
        self.stride_within_seq = int(stride_within_seq)
        self.max_windows = int(max_windows)
        self.mask = load_suite_mask(mask)
        self.target_tr = target_tr
        self.template_mismatch = template_mismatch
        # the store grid's affine, once (the brain-centred default reads nilearn's MNI mask)
        self.store_affine = self._layout().store_affine(
            tuple(self.contract["grid"]), float(self.contract.get("voxel_size", 2.0))
        )
        check_contract(  # the checkpoint's template against the suite's, once
            self.contract,
            {**self._fixed_fields(), "template": SUITE_TEMPLATE},
            what="brainmarks 'mni' data",
            template_mismatch=template_mismatch,
        )

    @classmethod
    def from_model(cls, model: InferenceModel, **kwargs) -> SwiftlibTransform:
        """The transform for a loaded checkpoint: its contract and window layout."""
        if not model.contract:
            raise ContractError(
                f"{model.path}: the checkpoint records no normalisation contract; expected one "
                "written by swiftlib's fit()"
            )
        kwargs.setdefault("sequence_length", model_frames(model))
        kwargs.setdefault("stride_within_seq", model_frame_step(model))
        return cls(model.contract, **kwargs)

    @property
    def span(self) -> int:
        """Source frames one window covers."""
        return self.sequence_length * self.stride_within_seq

    def _fixed_fields(self) -> dict:
        return {k: self.contract[k] for k in ("grid", "voxel_size", "layout") if k in self.contract}

    def effective_tr(self, tr: float) -> float:
        """The TR the model will see for a sample at ``tr`` (see ``target_tr``)."""
        if self.target_tr is None:
            return tr
        if self.target_tr != "auto":
            return float(self.target_tr)
        if self._tr_ok(tr):
            return tr
        lo, hi = self.contract["tr_range"]
        return (lo + hi) / 2.0

    def _tr_ok(self, tr: float) -> bool:
        """``tr`` inside the contract's TR range widened as :func:`check_contract` widens it."""
        if not self.contract.get("tr_range"):
            return True
        lo, hi = self.contract["tr_range"]
        slack = _TR_SLACK * max(hi, 1e-6)
        return lo - slack <= tr <= hi + slack

    def __call__(self, sample: dict) -> dict:
        from swiftlib.data.preprocess import PreprocessConfig, prepare_subject

        for key in ("bold", "tr"):
            if key not in sample:
                raise KeyError(
                    f"brainmarks sample has no {key!r} (keys: {sorted(sample)}); expected "
                    "bold (T, V), mean (1, V), std (1, V), tr"
                )
        bold = _numpy(sample["bold"])  # (T, V), z-scored per voxel
        if "mean" in sample and "std" in sample:
            bold = bold * _numpy(sample["std"]) + _numpy(sample["mean"])  # (T, V) raw BOLD
        tr = float(_numpy(sample["tr"]))
        new_tr = self.effective_tr(tr)
        if abs(new_tr - tr) > 1e-6:
            bold = resample_tr(bold, tr, new_tr)  # (T', V)
        if not self._tr_ok(new_tr):
            lo, hi = self.contract["tr_range"]
            raise ContractError(
                f"brainmarks sample: TR {tr:g} s; the checkpoint was trained on TR {lo:g}–{hi:g} s "
                f"(±{_TR_SLACK:.0%}) and target_tr=None keeps it — pass target_tr='auto' to "
                "resample it in time to the trained range"
            )
        bold = self._frames(bold)  # (nW * span, V)
        vol = unmask(bold, self.mask)  # (X, Y, Z, T) RAS+
        data, affine = _to_axcodes(vol, MNI152_2MM_AFFINE, self._layout().axcodes)
        cfg = PreprocessConfig(
            voxel_size=float(self.contract.get("voxel_size", 2.0)),
            grid=tuple(self.contract["grid"]),
            normalisation=self.contract.get("normalisation", "zscore_global"),
            layout=self._layout().name,
            mask="auto",  # the suite's data are brain-masked: zero outside
            min_frames=1,
        )
        out, _, _, _ = prepare_subject(
            data, affine, cfg, name="brainmarks sample", store_aff=self.store_affine
        )
        out = out[..., :: self.stride_within_seq].astype(np.float16)  # as the store keeps it
        # (D, H, W, nW * L) -> (1, D, H, W, nW * L)
        sample = dict(sample)
        sample["bold"] = torch.from_numpy(out.astype(np.float32))[None]
        return sample

    def _layout(self):
        from swiftlib.data.layouts import DEFAULT_LAYOUT, get_layout

        return get_layout(self.contract.get("layout", DEFAULT_LAYOUT))

    def _frames(self, bold: np.ndarray) -> np.ndarray:
        """Pad a short scan with its temporal mean; keep whole windows, at most ``max_windows``."""
        T = bold.shape[0]
        if T < self.span:
            pad = np.repeat(bold.mean(axis=0, keepdims=True), self.span - T, axis=0)
            log.info("brainmarks sample: %d frames < one window (%d); padded", T, self.span)
            bold = np.concatenate([bold, pad], axis=0)  # (span, V)
        num_windows = min(bold.shape[0] // self.span, self.max_windows)
        return bold[: num_windows * self.span]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _to_axcodes(data: np.ndarray, affine: np.ndarray, axcodes: str):
    """Reorient ``data (X, Y, Z, T)`` into ``axcodes`` voxel order (flips/permutes only)."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    if "".join(nib.aff2axcodes(affine)) == axcodes:
        return data, affine
    img = nib.Nifti1Image(data, affine)
    img = img.as_reoriented(ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes))))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


# ---------------------------------------------------------------------------------------------
# the wrapper: swiftlib encoder -> the suite's embeddings
# ---------------------------------------------------------------------------------------------


class SwiftlibWrapper(nn.Module):
    """A swiftlib encoder as the suite's ``ModelWrapper`` (``__space__ = "mni"``).

    Args:
        model: the checkpoint's :class:`~swiftlib.interpret.inference.InferenceModel`.
        sequence_length: frames per window (the transform's).
        precision: ``"fp32"`` or ``"bf16"`` (autocast; embeddings returned in float32).
        embeddings_cls: the NamedTuple to return (the plugin passes the suite's own
            ``brainmarks.models.base.Embeddings``; same fields as :class:`Embeddings`).

    ``forward(batch)``: ``batch["bold"] (B, 1, D, H, W, nW · L)`` → ``Embeddings(cls_embeds
    (B, 1, F), None, patch_embeds (B, nW · D' · H' · W' · T', F))``.
    """

    __space__: str = SPACE

    def __init__(
        self,
        model: InferenceModel,
        sequence_length: int,
        precision: str = "fp32",
        embeddings_cls=Embeddings,
    ):
        super().__init__()
        autocast_context(precision, torch.device("cpu"))  # validates the name
        self.encoder = model.encoder
        self.sequence_length = int(sequence_length)
        self.precision = precision
        self.embeddings_cls = embeddings_cls
        self.num_features = model.num_features
        self.checkpoint = model.path

    def forward(self, batch: dict) -> Embeddings:
        from swiftlib.models._encoder import volume_to_tokens

        x = batch["bold"]
        L = self.sequence_length
        if x.ndim != 6 or x.shape[1] != 1 or x.shape[-1] % L:
            raise ValueError(
                f"batch['bold']: shape {tuple(x.shape)}; expected (B, 1, D, H, W, nW * {L}) from "
                "SwiftlibTransform (whole windows of the model's sequence_length)"
            )
        B, C, D, H, W, T = x.shape
        nW = T // L
        x = x.float().reshape(B, C, D, H, W, nW, L)  # (B, 1, D, H, W, nW, L)
        x = x.permute(0, 5, 1, 2, 3, 4, 6).reshape(B * nW, C, D, H, W, L)  # (B*nW, 1, D, H, W, L)
        with autocast_context(self.precision, x.device):
            feats = self.encoder.forward_features(x)  # (B*nW, F, D', H', W', T')
            pooled = self.encoder.forward_head(feats, pre_logits=True)  # (B*nW, F)
            tokens = self.encoder.norm(volume_to_tokens(feats))  # (B*nW, D', H', W', T', F)
        F = pooled.shape[-1]
        cls_embeds = pooled.float().reshape(B, nW, F).mean(dim=1, keepdim=True)  # (B, 1, F)
        patch_embeds = tokens.float().reshape(B, -1, F)  # (B, nW*D'*H'*W'*T', F)
        return self.embeddings_cls(cls_embeds, None, patch_embeds)


def create_swiftlib_model(
    ckpt_path=None,
    *,
    precision: str = "fp32",
    max_windows: int = 8,
    mask_path=None,
    target_tr: float | str | None = "auto",
    template_mismatch: str = "warn",
    sequence_length: int | None = None,
    embeddings_cls=Embeddings,
) -> tuple[SwiftlibTransform, SwiftlibWrapper]:
    """The suite's ``(transform, model)`` pair for a swiftlib checkpoint (what the
    ``swiftlib`` plugin's constructor returns; the suite passes ``model_kwargs`` here).

    Args:
        ckpt_path: a swiftlib checkpoint file or DeepSpeed folder (fine-tuning, SimMIM or
            contrastive pretraining), read weights-only on CPU (the suite moves the model).
        precision, max_windows, mask_path, target_tr, template_mismatch: see
            :class:`SwiftlibTransform` / :class:`SwiftlibWrapper`.
        sequence_length: frames per window; None = how the checkpoint was trained.
    """
    if ckpt_path is None:
        raise ValueError(
            "model 'swiftlib': ckpt_path is required — pass model_kwargs.ckpt_path=<a swiftlib "
            "checkpoint, e.g. runs/pretrain/checkpoints/best.ckpt>"
        )
    model = load_inference_model(ckpt_path, device="cpu")
    kwargs = {} if sequence_length is None else {"sequence_length": int(sequence_length)}
    transform = SwiftlibTransform.from_model(
        model,
        max_windows=max_windows,
        mask=mask_path,
        target_tr=target_tr,
        template_mismatch=template_mismatch,
        **kwargs,
    )
    wrapper = SwiftlibWrapper(
        model, transform.sequence_length, precision=precision, embeddings_cls=embeddings_cls
    )
    wrapper.requires_grad_(False)
    wrapper.eval()
    return transform, wrapper
