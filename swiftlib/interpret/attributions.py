"""Voxel attributions of a fine-tuned model, back in MNI space, with sanity checks.

:func:`attribute` explains a checkpoint's prediction for every window of some subjects
with captum: Integrated Gradients (``"ig"``), IG with SmoothGrad² (``"ig_smoothgrad_sq"``),
plain gradients (``"saliency"``), gradient × input (``"grad_x_input"``) or occlusion
(``"occlusion"``). Each window gives a map shaped like the input, ``(D, H, W, T)``; maps are
aggregated over time and windows (mean of absolute values, or signed), then over subjects
(all of them and per target class). :meth:`Attributions.to_nifti` puts a map back on the
subjects' **source MNI grid** through the store geometry (an exact crop/pad inverse).

Sanity checks return numbers (DESIGN §8, ``make science``):

* :func:`recovery_auroc` — voxel-wise AUROC of a map against the ground-truth mask of a
  label's planted regions (synthetic cohort), inside the brain mask: 1 = the map ranks
  every planted voxel above every other brain voxel, 0.5 = no preference.
* :func:`randomised_model` — the same architecture with re-initialised weights (Adebayo et
  al., 2018, "Sanity checks for saliency maps"): a map that survives randomisation shows
  the input, not what the model learned, so its recovery AUROC must collapse.
* :func:`region_preference` — the planted regions against the cohort's other (unlabelled)
  network regions; a model trained on ``null_label`` should show none (≈ 0.5).

:func:`summarise_by_region` tabulates any map by an atlas image (refused when it is on
another grid or in another space, unless ``resample="nearest"`` is asked for).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from swiftlib.interpret._model import (
    InferenceModel,
    autocast_context,
    check_subjects,
    load_inference_model,
    resolve_device,
)
from swiftlib.tasks.common import CheckpointError

__all__ = [
    "METHODS",
    "AtlasError",
    "Attributions",
    "attribute",
    "attribute_windows",
    "make_baseline",
    "randomised_model",
    "ground_truth",
    "ground_truth_mask",
    "recovery_auroc",
    "region_preference",
    "summarise_by_region",
    "load_map",
]

log = logging.getLogger(__name__)

METHODS = ("ig", "ig_smoothgrad_sq", "saliency", "smoothgrad", "grad_x_input", "occlusion")
AGGREGATES = ("abs", "signed", "subject_abs")
_MNI_CODE = 4  # NIfTI xform code "mni_152"


class AtlasError(ValueError):
    """An atlas or mask image does not fit the map it should summarise."""


# ---------------------------------------------------------------------------------------------
# per-window attributions
# ---------------------------------------------------------------------------------------------

def make_baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    """The IG / occlusion reference input for ``x (B, 1, D, H, W, T)``.

    ``"background"``: every voxel at the window's background value (the store's
    out-of-brain constant, read at the corner voxel) — "no brain signal at all";
    ``"temporal_mean"``: each voxel's mean over the window — "no fluctuation", which
    isolates the dynamics from the static anatomy; a number: that constant.
    """
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "background":
        return x[:, :, :1, :1, :1, :1].expand_as(x).clone()  # (B, 1, 1, 1, 1, 1) -> (B, 1, D, H, W, T)
    if baseline == "temporal_mean":
        return x.mean(dim=-1, keepdim=True).expand_as(x).clone()  # (B, 1, D, H, W, 1) -> (B, 1, D, H, W, T)
    raise ValueError(f"baseline={baseline!r}: expected 'background', 'temporal_mean' or a number")


def attribute_windows(model: InferenceModel, x: torch.Tensor, target, method: str = "ig", baseline="background",
                      n_steps: int = 32, internal_batch_size: int | None = None, nt_samples: int = 8,
                      noise_level: float = 0.1, occlusion_window=(4, 4, 4), precision: str = "fp32") -> torch.Tensor:
    """Attributions of one batch: ``x (B, 1, D, H, W, T)`` → ``(B, D, H, W, T)`` float32.

    ``target``: an int class (classification), 0 (regression), or a ``(B,)`` tensor of them.
    ``internal_batch_size`` bounds memory (IG steps / occlusion perturbations per forward).
    ``noise_level``: SmoothGrad noise σ as a fraction of the batch's value range.
    ``occlusion_window``: ``(d, h, w)`` voxels occluded together, over all frames.
    """
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    device = x.device

    def forward(inp):
        with autocast_context(precision, device):
            return model.forward(inp).float()  # (B, num_outputs)

    x = x.detach().float()
    if method == "ig":
        out = IntegratedGradients(forward).attribute(x, baselines=make_baseline(x, baseline), target=target,
                                                    n_steps=n_steps, internal_batch_size=internal_batch_size)
    elif method == "ig_smoothgrad_sq":
        sd = float(noise_level * (x.amax() - x.amin()))
        out = NoiseTunnel(IntegratedGradients(forward)).attribute(
            x, nt_type="smoothgrad_sq", nt_samples=nt_samples, nt_samples_batch_size=1, stdevs=sd,
            baselines=make_baseline(x, baseline), target=target, n_steps=n_steps,
            internal_batch_size=internal_batch_size)
    elif method == "saliency":
        out = Saliency(forward).attribute(x, target=target, abs=True)
    elif method == "smoothgrad":  # |gradient| averaged over noisy copies of the input (Smilkov et al. 2017)
        sd = float(noise_level * (x.amax() - x.amin()))
        out = NoiseTunnel(Saliency(forward)).attribute(x, nt_type="smoothgrad", nt_samples=nt_samples,
                                                       nt_samples_batch_size=1, stdevs=sd, target=target, abs=True)
    elif method == "grad_x_input":
        out = InputXGradient(forward).attribute(x, target=target)
    else:
        T = x.shape[-1]
        win = tuple(int(v) for v in occlusion_window)
        if len(win) != 3 or min(win) < 1:
            raise ValueError(f"occlusion_window={occlusion_window}: expected three positive voxel counts (d, h, w)")
        out = Occlusion(forward).attribute(x, sliding_window_shapes=(1, *win, T), strides=(1, *win, T),
                                           baselines=make_baseline(x, baseline), target=target,
                                           perturbations_per_eval=internal_batch_size or 1)
    return out.detach().float()[:, 0]  # (B, 1, D, H, W, T) -> (B, D, H, W, T)


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

@dataclass
class Attributions:
    """What :func:`attribute` returns. Maps are on the **store grid** ``(D, H, W)``.

    Attributes:
        subject_maps: ``{subject_id: (D, H, W)}`` mean over the subject's windows and frames.
        class_maps: ``{target: (D, H, W)}`` mean over the subjects explained for that target.
        group_map: ``(D, H, W)`` mean over all subjects.
        time_curves: DataFrame ``subject_id, window_start, frame, value`` (mean over brain
            voxels of each frame's map: how attribution moves through the window).
        targets: ``{subject_id: target}``; predictions: ``{subject_id: model output}``.
        brain_mask: ``(D, H, W)`` union of the subjects' masks.
        geometry: store ↔ source geometry (of the first subject; all are checked equal).
        window_maps: ``[(D, H, W, T)]`` per window when ``keep_window_maps=True``, else empty.
        params: the call's settings (method, baseline, aggregate, …).
    """

    subject_maps: dict
    class_maps: dict
    group_map: np.ndarray
    time_curves: object
    targets: dict
    predictions: dict
    brain_mask: np.ndarray
    geometry: object
    window_maps: list = field(default_factory=list)
    window_index: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def map(self, which="group") -> np.ndarray:
        """``"group"``, a subject id, or ``("class", k)``: a store-grid ``(D, H, W)`` map."""
        if isinstance(which, tuple) and len(which) == 2 and which[0] == "class":
            if which[1] not in self.class_maps:
                raise KeyError(f"no class map for target {which[1]!r}; available: {sorted(self.class_maps)}")
            return self.class_maps[which[1]]
        if which == "group":
            return self.group_map
        if which in self.subject_maps:
            return self.subject_maps[which]
        raise KeyError(f"map {which!r}: expected 'group', ('class', k) or one of the subjects {list(self.subject_maps)[:5]}…")

    def to_nifti(self, which="group", space: str = "source"):
        """A map as NIfTI: ``space="source"`` (the subjects' source MNI grid, exact inverse of
        the store crop/pad) or ``"store"`` (store grid, MNI affine). sform/qform code MNI."""
        data = np.asarray(self.map(which), dtype=np.float32)
        if space == "source" and self.geometry.offset is None:
            raise ValueError("these subjects were resampled onto the store grid, so there is no exact source grid; "
                             "use space='store' (the store grid with its MNI affine)")
        img = self.geometry.to_nifti(data, space=space)
        img.set_sform(img.affine, code=_MNI_CODE)
        img.set_qform(img.affine, code=_MNI_CODE)
        return img

    def save(self, out_dir, space: str = "source", subjects: bool = False) -> dict[str, Path]:
        """Write the group map, the class maps (and each subject's map when ``subjects``) as
        ``attribution_<name>.nii.gz`` plus ``time_curves.csv``; returns ``{name: path}``."""
        import nibabel as nib

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        items = {"group": "group", **{f"class{k}": ("class", k) for k in self.class_maps}}
        if subjects:
            items.update({s: s for s in self.subject_maps})
        written = {}
        for name, which in items.items():
            path = out / f"attribution_{name}.nii.gz"
            nib.save(self.to_nifti(which, space=space), path)
            written[name] = path
        curves = out / "time_curves.csv"
        self.time_curves.to_csv(curves, index=False)
        written["time_curves"] = curves
        return written


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------

def _resolve_target(model: InferenceModel, target, y, pred) -> int:
    if model.task == "regression":
        if target not in (None, 0, "label", "predicted"):
            raise ValueError(f"target={target!r}: a regression head has one output; use target=0 (or None)")
        return 0
    n = model.num_outputs
    if target is None or target == "predicted":
        return int(pred.argmax())
    if target == "label":
        return int(y)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= int(target) < n:
            raise ValueError(f"target={target}: the checkpoint's head for {model.label!r} has {n} classes (0–{n - 1})")
        return int(target)
    raise ValueError(f"target={target!r}: expected a class index, 'label' (true class) or 'predicted'")


def _check_head(model: InferenceModel, label: str | None) -> None:
    if model.kind != "finetune":
        raise CheckpointError(
            f"{model.path}: a {model.kind!r} checkpoint has no prediction head to explain; pass a fine-tuning "
            "checkpoint (fit(kind='finetune')) trained on the label you want attributions for")
    if label is not None and label != model.label:
        raise CheckpointError(
            f"{model.path}: its head predicts {model.label!r}, not {label!r}; use a checkpoint fine-tuned on "
            f"{label!r} (or label={model.label!r})")


def attribute(
    checkpoint,
    store,
    subjects: Sequence[str] | str,
    method: str = "ig",
    target=None,
    label: str | None = None,
    baseline="background",
    aggregate: str = "abs",
    windows: int | None = None,
    sequence_length: int | None = None,
    stride_between_seq: float = 1.0,
    stride_within_seq: int | None = None,
    batch_size: int = 1,
    internal_batch_size: int | None = 8,
    n_steps: int = 32,
    nt_samples: int = 8,
    noise_level: float = 0.1,
    occlusion_window=(4, 4, 4),
    keep_window_maps: bool = False,
    precision: str = "fp32",
    device: str = "auto",
    progress: bool = True,
    seed: int = 0,
) -> Attributions:
    """Explain a fine-tuned checkpoint's output for every window of ``subjects``.

    Args:
        checkpoint: a fine-tuning checkpoint path, or an :class:`InferenceModel`
            (e.g. :func:`randomised_model`).
        store: an open store or its path (must satisfy the checkpoint's contract).
        subjects: subject ids to explain.
        method: one of ``METHODS``.
        target: the output to explain: a class index, ``"label"`` (each subject's true
            class), ``"predicted"`` (default for classification) — regression has one output.
        label: the label you expect the checkpoint to predict (checked; optional).
        baseline: ``"background"`` (default), ``"temporal_mean"`` or a number (see :func:`make_baseline`).
        aggregate: ``"abs"`` (mean |attribution|: where the model looks), ``"signed"``, or
            ``"subject_abs"`` (signed over a subject's windows and frames — the model's
            consistent response — then the magnitude averaged over subjects; subject maps stay
            signed). ``subject_abs`` is the setting that recovers both planted mechanisms of the
            synthetic cohort (amplitude and connectivity) with randomised models at chance.
        windows: at most this many windows per subject (evenly spaced); None = all.
        sequence_length, stride_within_seq, stride_between_seq: window layout (default: the
            frames and frame step the model was trained with, windows back to back).
        batch_size: windows per captum call; internal_batch_size: IG steps / occlusion
            perturbations per forward pass (memory bound).
        n_steps, nt_samples, noise_level, occlusion_window: method settings.
        keep_window_maps: also keep every ``(D, H, W, T)`` window map (memory!).
        precision: ``"fp32"`` or ``"bf16"`` autocast.
        seed: seed of the noise of ``smoothgrad`` / ``ig_smoothgrad_sq``: the same call gives
            the same maps whatever the caller's RNG state (drawn in a forked RNG).

    Returns:
        :class:`Attributions` (store grid; ``.to_nifti`` / ``.save`` go to source MNI space).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from swiftlib.data.store import open_store
    from swiftlib.data.windows import WindowDataset, collate_samples

    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}: expected one of {AGGREGATES}")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    if windows is not None and windows < 1:
        raise ValueError(f"windows={windows}: expected a positive number of windows per subject or None (all)")
    make_baseline(torch.zeros(1, 1, 1, 1, 1, 1), baseline)  # validates baseline early
    store = open_store(store) if isinstance(store, (str, Path)) else store
    dev = resolve_device(device)
    autocast_context(precision, dev)
    model = checkpoint if isinstance(checkpoint, InferenceModel) else load_inference_model(checkpoint, device=dev)
    model.to(dev)
    _check_head(model, label)
    model.check_store(store)
    sids = check_subjects(store, subjects)
    from swiftlib.interpret.embeddings import _model_frame_step, _model_frames

    seq = int(sequence_length or _model_frames(model))
    step = int(stride_within_seq or _model_frame_step(model))
    ds = WindowDataset(store, sids, sequence_length=seq, stride_between_seq=stride_between_seq,
                       stride_within_seq=step, mode="eval", label=model.label if model.label in store.labels else None)
    index = ds.index
    keep = []
    for _sid, grp in index.groupby("subject_id", sort=False):
        pos = grp.index.to_numpy()
        if windows is not None and len(pos) > windows:
            pos = pos[np.round(np.linspace(0, len(pos) - 1, windows)).astype(int)]
        keep.extend(pos.tolist())
    geoms = [store.geometry(s) for s in sids]
    if any(g != geoms[0] for g in geoms[1:]):
        log.warning("subjects have different source geometries; maps go back to the first subject's source grid")
    brain = np.zeros(store.grid, dtype=bool)
    for s in sids:
        brain |= store.mask(s)
    brain_t = torch.from_numpy(brain).to(dev)
    sums = {s: np.zeros(store.grid, dtype=np.float64) for s in sids}
    counts = dict.fromkeys(sids, 0)
    targets, preds, curves, window_maps, window_index = {}, {}, [], [], []
    reduce = (lambda a: a.abs()) if aggregate == "abs" else (lambda a: a)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), \
            tqdm(total=len(keep), desc=f"attribution ({method})", unit="window", disable=not progress) as pbar:
        torch.manual_seed(seed)
        for b0 in range(0, len(keep), batch_size):
            batch = collate_samples([ds[i] for i in keep[b0:b0 + batch_size]])
            x = batch.x.to(dev)  # (B, 1, D, H, W, T)
            with torch.no_grad(), autocast_context(precision, dev):
                out = model.forward(x).float().cpu()  # (B, num_outputs)
            tgt = [_resolve_target(model, target, y, o) for y, o in zip(batch.y, out, strict=True)]
            a = attribute_windows(model, x, torch.tensor(tgt, device=dev), method=method, baseline=baseline,
                                  n_steps=n_steps, internal_batch_size=internal_batch_size, nt_samples=nt_samples,
                                  noise_level=noise_level, occlusion_window=occlusion_window,
                                  precision=precision)  # (B, D, H, W, T)
            r = reduce(a)
            frame_vals = r[:, brain_t].mean(dim=1).cpu().numpy()  # (B, V, T) -> (B, T)
            vol = r.mean(dim=-1).cpu().numpy()  # (B, D, H, W)
            for k, sid in enumerate(batch.subject_id):
                sums[sid] += vol[k]
                counts[sid] += 1
                targets.setdefault(sid, tgt[k])
                score = out[k]
                if model.task == "classification":
                    score = score.softmax(-1)
                preds.setdefault(sid, []).append(score.numpy())
                start = int(batch.window_start[k])
                curves.append(pd.DataFrame({"subject_id": sid, "window_start": start,
                                            "frame": np.arange(frame_vals.shape[1]), "value": frame_vals[k]}))
                if keep_window_maps:
                    window_maps.append(a[k].cpu().numpy())
                    window_index.append((sid, start))
            pbar.update(len(batch.subject_id))
    subject_maps = {s: (sums[s] / counts[s]).astype(np.float32) for s in sids}
    # subject_abs: signed within a subject, magnitude across subjects (a connectivity effect
    # flips the sign of x·∂y/∂x from subject to subject and cancels in a signed group mean)
    pooled = {s: np.abs(m) for s, m in subject_maps.items()} if aggregate == "subject_abs" else subject_maps
    class_maps = {}
    for t in sorted(set(targets.values())):
        members = [pooled[s] for s in sids if targets[s] == t]
        class_maps[t] = np.mean(members, axis=0).astype(np.float32)
    group = np.mean([pooled[s] for s in sids], axis=0).astype(np.float32)
    predictions = {s: _summarise_prediction(model, np.mean(v, axis=0)) for s, v in preds.items()}
    params = {"checkpoint": model.path, "method": method, "baseline": baseline, "aggregate": aggregate,
              "target": target, "label": model.label, "windows": windows, "sequence_length": seq,
              "stride_within_seq": step, "seed": seed,
              "n_steps": n_steps, "num_subjects": len(sids), "num_windows": len(keep)}
    log.info("attributions (%s) for %d windows of %d subjects", method, len(keep), len(sids))
    return Attributions(subject_maps, class_maps, group, pd.concat(curves, ignore_index=True), targets, predictions,
                        brain, geoms[0], window_maps, window_index, params)


def _summarise_prediction(model: InferenceModel, mean_out: np.ndarray) -> float:
    if model.task == "classification":
        return float(mean_out[1]) if len(mean_out) == 2 else float(mean_out.argmax())
    std = float(model.config.get("target_std", 1.0))
    return float(mean_out[0]) * std + float(model.config.get("target_mean", 0.0))


def randomised_model(checkpoint, seed: int = 0, device: str = "auto") -> InferenceModel:
    """The checkpoint's architecture with **every** weight re-initialised (encoder and head;
    Adebayo et al. 2018's full model randomisation). Same metadata, so it passes the same
    head and contract checks."""
    model = checkpoint if isinstance(checkpoint, InferenceModel) else load_inference_model(checkpoint, device=device)
    from swiftlib.tasks.finetune import FinetuneTask

    if model.kind != "finetune":
        raise CheckpointError(f"{model.path}: randomisation checks need a fine-tuning checkpoint, got kind {model.kind!r}")
    torch.manual_seed(seed)
    module = FinetuneTask({**model.config, "init_from": None})
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    rnd = InferenceModel(module=module, kind=model.kind, meta=dict(model.meta), config=dict(model.config),
                         path=f"{model.path} (randomised, seed {seed})", data=dict(model.data))
    return rnd.to(next(model.module.parameters()).device)


# ---------------------------------------------------------------------------------------------
# images, atlases and ground truth
# ---------------------------------------------------------------------------------------------

def load_map(img):
    """A nibabel image from a path or an image (3D; a 4D image with one volume is squeezed)."""
    import nibabel as nib

    if isinstance(img, (str, Path)):
        if not Path(img).exists():
            raise FileNotFoundError(f"image {img} does not exist")
        img = nib.load(str(img))
    if not hasattr(img, "affine"):
        raise TypeError(f"expected a NIfTI image or a path, got {type(img).__name__}")
    if img.ndim == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header)
    if img.ndim != 3:
        raise AtlasError(f"image shape {img.shape}: expected a 3D map (X, Y, Z)")
    return img


def _space_code(img) -> int:
    s, q = int(img.header["sform_code"]), int(img.header["qform_code"])
    return s or q


def _conform(atlas, ref, resample: str | None, what: str):
    """``atlas`` on ``ref``'s grid: equal grids pass, others are refused or resampled."""
    from nilearn.image import resample_to_img

    ra, rr = _space_code(atlas), _space_code(ref)
    if ra == 1 and rr in (2, 3, 4, 5) or rr == 1 and ra in (2, 3, 4, 5):
        raise AtlasError(
            f"{what} is in scanner space (xform code 1) and the map in a template space (code {max(ra, rr)}) or "
            "vice versa; register the atlas to MNI152 first (maps from swiftlib are MNI152)")
    same = atlas.shape[:3] == ref.shape[:3] and np.allclose(atlas.affine, ref.affine, atol=1e-3)
    if same:
        return atlas
    if resample is None:
        raise AtlasError(
            f"{what} grid (shape {atlas.shape[:3]}, voxel {np.round(np.abs(np.diag(atlas.affine)[:3]), 2).tolist()} mm, "
            f"origin {np.round(atlas.affine[:3, 3], 1).tolist()}) differs from the map's (shape {ref.shape[:3]}, voxel "
            f"{np.round(np.abs(np.diag(ref.affine)[:3]), 2).tolist()} mm, origin {np.round(ref.affine[:3, 3], 1).tolist()}); "
            "pass resample='nearest' to resample the atlas onto the map grid (nearest neighbour keeps labels intact), "
            "or write the map on the atlas grid")
    if resample != "nearest":
        raise ValueError(f"resample={resample!r}: expected None (refuse other grids) or 'nearest'")
    corners = np.array([[0, 0, 0], np.array(atlas.shape[:3]) - 1])
    a_world = corners @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]
    r_corners = np.array([[0, 0, 0], np.array(ref.shape[:3]) - 1])
    r_world = r_corners @ ref.affine[:3, :3].T + ref.affine[:3, 3]
    lo_a, hi_a = a_world.min(0), a_world.max(0)
    lo_r, hi_r = r_world.min(0), r_world.max(0)
    if np.any(hi_a < lo_r) or np.any(hi_r < lo_a):
        raise AtlasError(f"{what} does not overlap the map in world space (bounding boxes {lo_a.round(0).tolist()}–"
                         f"{hi_a.round(0).tolist()} vs {lo_r.round(0).tolist()}–{hi_r.round(0).tolist()} mm); "
                         "is it in another space?")
    log.info("resampling %s onto the map grid (nearest neighbour)", what)
    return resample_to_img(atlas, ref, interpolation="nearest", force_resample=True, copy_header=True)


def summarise_by_region(map_img, atlas_img, labels: dict | None = None, mask_img=None, resample: str | None = None):
    """Attribution per atlas region.

    Args:
        map_img: a 3D map (NIfTI image or path), e.g. ``Attributions.to_nifti()``.
        atlas_img: an integer label image (0 = background) on the map's grid, or a
            ``{name: mask image}`` dict (e.g. :func:`ground_truth` regions).
        labels: ``{int value: name}`` for a label image (default: ``region_<value>``).
        mask_img: brain mask; the "brain" reference is the mask (default: non-zero map voxels).
        resample: ``None`` refuses an atlas on another grid (:class:`AtlasError`);
            ``"nearest"`` resamples it onto the map grid with nearest-neighbour interpolation.

    Returns:
        DataFrame ``region, num_voxels, mean, sum, share, ratio_to_brain`` sorted by ``mean``
        (``share``: fraction of the brain's total attribution; ``ratio_to_brain``: region
        mean / brain mean — above 1 means the model looks there more than on average).
    """
    import pandas as pd

    ref = load_map(map_img)
    data = np.asarray(ref.dataobj, dtype=np.float64)
    if mask_img is not None:
        brain = np.asarray(_conform(load_map(mask_img), ref, resample, "mask image").dataobj) > 0
    else:
        brain = data != 0
    if not brain.any():
        raise ValueError("the brain mask (or the map's non-zero voxels) is empty; nothing to summarise")
    if isinstance(atlas_img, dict):
        regions = {name: np.asarray(_conform(load_map(m), ref, resample, f"region {name!r}").dataobj) > 0
                   for name, m in atlas_img.items()}
    else:
        atlas = np.asarray(_conform(load_map(atlas_img), ref, resample, "atlas image").dataobj)
        if not np.allclose(atlas, np.round(atlas)):
            raise AtlasError("atlas image holds non-integer values; expected a label image (0 = background, 1, 2, …) "
                             "or pass a {name: mask} dict")
        values = [int(v) for v in np.unique(atlas) if v != 0]
        labels = labels or {}
        regions = {labels.get(v, f"region_{v}"): atlas == v for v in values}
    total, brain_mean = data[brain].sum(), data[brain].mean()
    rows = []
    for name, m in regions.items():
        m = m & brain
        n = int(m.sum())
        vals = data[m]
        rows.append({"region": name, "num_voxels": n, "mean": float(vals.mean()) if n else float("nan"),
                     "sum": float(vals.sum()), "share": float(vals.sum() / total) if total else float("nan"),
                     "ratio_to_brain": float(vals.mean() / brain_mean) if n and brain_mean else float("nan")})
    return pd.DataFrame(rows).sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)


def ground_truth(store) -> dict:
    """The synthetic cohort's ``ground_truth.json`` plus loaded images: ``{"labels": …,
    "regions": {name: image}, "brain_mask": image}`` (source MNI grid)."""
    import nibabel as nib

    from swiftlib.utils.io import read_json

    root = Path(getattr(store, "root", store)) / "ground_truth"
    if not (root / "ground_truth.json").is_file():
        raise FileNotFoundError(f"{root}/ground_truth.json is missing; ground truth exists only for the synthetic "
                                "cohort (swiftlib synth)")
    info = read_json(root / "ground_truth.json")
    regions = {name: nib.load(str(root / r["file"])) for name, r in info["regions"].items()}
    return {"labels": info["labels"], "regions": regions, "brain_mask": nib.load(str(root / info["brain_mask"])),
            "info": info}


def ground_truth_mask(store, label: str) -> np.ndarray:
    """Union of the regions that drive ``label`` on the source grid, bool ``(X, Y, Z)``
    (empty for ``null_label``)."""
    gt = ground_truth(store)
    if label not in gt["labels"]:
        raise ValueError(f"label {label!r} has no ground truth; known: {sorted(gt['labels'])}")
    shape = gt["brain_mask"].shape
    mask = np.zeros(shape, dtype=bool)
    for name in gt["labels"][label]["regions"]:
        mask |= np.asarray(gt["regions"][name].dataobj) > 0
    return mask


def _as_source_array(map_img, store):
    gt = ground_truth(store)
    img = load_map(map_img) if not isinstance(map_img, np.ndarray) else None
    if img is not None:
        img = _conform(img, gt["brain_mask"], None, "attribution map")
        data = np.asarray(img.dataobj, dtype=np.float64)
    else:
        data = np.asarray(map_img, dtype=np.float64)
        if data.shape != gt["brain_mask"].shape:
            raise AtlasError(f"map shape {data.shape}; expected the ground truth's source grid {gt['brain_mask'].shape} "
                             "(use Attributions.to_nifti(space='source'))")
    return data, np.asarray(gt["brain_mask"].dataobj) > 0, gt


def recovery_auroc(map_img, store, label: str) -> float:
    """Voxel-wise AUROC of a source-grid map (image or array) against ``label``'s planted
    regions, over the brain mask (1 = perfect ranking, 0.5 = chance)."""
    from sklearn.metrics import roc_auc_score

    data, brain, _ = _as_source_array(map_img, store)
    truth = ground_truth_mask(store, label)
    if not truth[brain].any():
        raise ValueError(f"label {label!r} has no planted region inside the brain mask (e.g. null_label); "
                         "use region_preference() for negative controls")
    return float(roc_auc_score(truth[brain], data[brain]))


def region_preference(map_img, store, labels: Sequence[str] = ("sex", "age")) -> float:
    """AUROC of the map for the planted regions of ``labels`` against the cohort's other
    (unlabelled, "background") network regions: ≈ 0.5 = no preference for planted regions.
    Both sets carry signal in the data, so this is fair to a model that merely tracks
    fluctuation; a ``null_label`` model should stay near 0.5."""
    from sklearn.metrics import roc_auc_score

    data, brain, gt = _as_source_array(map_img, store)
    planted = np.zeros_like(brain)
    for lab in labels:
        planted |= ground_truth_mask(store, lab)
    other = np.zeros_like(brain)
    for name, r in gt["info"]["regions"].items():
        if r.get("drives") is None:
            other |= np.asarray(gt["regions"][name].dataobj) > 0
    other &= ~planted
    sel = (planted | other) & brain
    return float(roc_auc_score(planted[sel], data[sel]))
