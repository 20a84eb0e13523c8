"""Voxel attributions of a fine-tuned model, back in MNI space, with sanity checks.

:func:`attribute` explains a checkpoint's prediction for every window of some subjects
with captum (the methods are in :mod:`swiftlib.interpret.methods`). Each window gives a map
shaped like the input, ``(D, H, W, T)``; maps are aggregated over time and windows, then
over subjects (all of them and per target class; :mod:`swiftlib.interpret.maps`).
:meth:`Attributions.to_nifti` puts a map back on the subjects' **source MNI grid** through
the store geometry (an exact crop/pad inverse).

Sanity checks return numbers (DESIGN §8, ``make science``):

* :func:`recovery_auroc` — voxel-wise AUROC of a map against the ground-truth mask of a
  label's planted regions (synthetic cohort), inside the brain mask.
* :func:`randomised_model` — the same architecture with re-initialised weights (Adebayo et
  al., 2018, "Sanity checks for saliency maps"): a map that survives randomisation shows
  the input, not what the model learned, so its recovery AUROC must collapse.
* :func:`region_preference` — the planted regions against the cohort's other (unlabelled)
  network regions; a model trained on ``null_label`` should show none (≈ 0.5).

These, :func:`summarise_by_region` (any map by an atlas) and the ground-truth readers live
in :mod:`swiftlib.interpret.regions` and are importable from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from swiftlib.interpret.config import AGGREGATES, METHODS, AttributionConfig
from swiftlib.interpret.inference import InferenceModel, load_inference_inputs, load_inference_model
from swiftlib.interpret.maps import Attributions, MapAccumulator
from swiftlib.interpret.methods import attribute_windows, make_baseline
from swiftlib.interpret.regions import (
    AtlasError,
    describe_sanity_checks,
    ground_truth,
    ground_truth_mask,
    load_map,
    recovery_auroc,
    region_preference,
    summarise_by_region,
)
from swiftlib.tasks.common import CheckpointError

__all__ = [
    "METHODS",
    "AGGREGATES",
    "AtlasError",
    "AttributionConfig",
    "Attributions",
    "attribute",
    "attribute_windows",
    "make_baseline",
    "randomised_model",
    "ground_truth",
    "ground_truth_mask",
    "recovery_auroc",
    "region_preference",
    "describe_sanity_checks",
    "summarise_by_region",
    "load_map",
]

log = logging.getLogger(__name__)


def attribute(
    checkpoint,
    store,
    subjects: Sequence[str] | str,
    config: AttributionConfig | None = None,
    **options,
) -> Attributions:
    """Explain a fine-tuned checkpoint's output for every window of ``subjects``.

    Args:
        checkpoint: a fine-tuning checkpoint (file or DeepSpeed folder), or an
            :class:`~swiftlib.interpret.inference.InferenceModel` (e.g. :func:`randomised_model`).
        store: an open store or its path (must satisfy the checkpoint's contract).
        subjects: subject ids to explain.
        config: an :class:`~swiftlib.interpret.config.AttributionConfig` (None: defaults).
        **options: its fields by name, replacing the config's values; the main ones:

            - ``method``: one of ``METHODS`` (default ``"ig"``).
            - ``target``: the output to explain: a class index, ``"label"`` (each subject's
              true class), ``"predicted"`` (default for classification); regression has one.
            - ``label``: the label you expect the checkpoint to predict (checked).
            - ``baseline``: ``"background"``, ``"temporal_mean"`` or a number.
            - ``aggregate``: ``"abs"`` (mean |attribution|: where the model looks),
              ``"signed"``, or ``"subject_abs"`` (signed over a subject's windows and frames —
              the model's consistent response — then the magnitude averaged over subjects;
              subject maps stay signed). ``subject_abs`` recovers both planted mechanisms of
              the synthetic cohort (amplitude and connectivity) with randomised models at
              chance.
            - ``windows``: at most this many windows per subject (evenly spaced).
            - window layout (default: as the model was trained), batch sizes, ``n_steps``,
              ``nt_samples``, ``noise_level``, ``occlusion_window``, ``keep_window_maps``,
              ``precision``, ``device``, ``progress``, ``seed``: see the config.

    Returns:
        :class:`Attributions` (store grid; ``.to_nifti`` / ``.save`` go to source MNI space).
    """
    from tqdm.auto import tqdm

    from swiftlib.data.windows import collate_samples

    cfg = AttributionConfig.resolve(config, options, caller="attribute()", also=("subjects",))
    inputs = load_inference_inputs(checkpoint, store, subjects, cfg)
    model, dev = inputs.model, inputs.device
    _check_head(model, cfg.label)
    ds = inputs.windows(label=model.label if model.label in inputs.store.labels else None)
    keep = _evenly_spaced(ds.index, cfg.windows)
    acc = MapAccumulator(model, inputs.store, ds.subject_ids, cfg.aggregate, cfg.keep_window_maps)
    rng_devices = [dev] if dev.type == "cuda" else []
    bar = tqdm(
        total=len(keep), desc=f"attribution ({cfg.method})", unit="window", disable=not cfg.progress
    )
    with torch.random.fork_rng(devices=rng_devices), bar:
        torch.manual_seed(cfg.seed)
        for b0 in range(0, len(keep), cfg.batch_size):
            batch = collate_samples([ds[i] for i in keep[b0 : b0 + cfg.batch_size]])
            x = batch.x.to(dev)  # (B, 1, D, H, W, T)
            with torch.no_grad(), inputs.autocast():
                out = model.forward(x).float().cpu()  # (B, num_outputs)
            tgt = [
                _resolve_target(model, cfg.target, y, o) for y, o in zip(batch.y, out, strict=True)
            ]
            target = torch.tensor(tgt, device=dev)
            maps = attribute_windows(model, x, target, cfg)  # (B, D, H, W, T)
            acc.add(batch.subject_id, batch.window_start, maps, out, tgt)
            bar.update(len(batch.subject_id))
    params = {
        "checkpoint": model.path,
        "method": cfg.method,
        "baseline": cfg.baseline,
        "aggregate": cfg.aggregate,
        "target": cfg.target,
        "label": model.label,
        "windows": cfg.windows,
        "sequence_length": inputs.sequence_length,
        "stride_within_seq": inputs.stride_within_seq,
        "seed": cfg.seed,
        "n_steps": cfg.n_steps,
        "num_subjects": len(ds.subject_ids),
        "num_windows": len(keep),
    }
    log.info(
        "attributions (%s) for %d windows of %d subjects",
        cfg.method,
        len(keep),
        len(ds.subject_ids),
    )
    return acc.result(params)


def _evenly_spaced(index, windows: int | None) -> list[int]:
    """Dataset positions of at most ``windows`` evenly spaced windows per subject (None: all)."""
    keep = []
    for _sid, grp in index.groupby("subject_id", sort=False):
        pos = grp.index.to_numpy()
        if windows is not None and len(pos) > windows:
            pos = pos[np.round(np.linspace(0, len(pos) - 1, windows)).astype(int)]
        keep.extend(pos.tolist())
    return keep


def _resolve_target(model: InferenceModel, target, y, pred) -> int:
    if model.task == "regression":
        if target not in (None, 0, "label", "predicted"):
            raise ValueError(
                f"target={target!r}: a regression head has one output; use target=0 (or None)"
            )
        return 0
    n = model.num_outputs
    if target is None or target == "predicted":
        return int(pred.argmax())
    if target == "label":
        return int(y)
    if not 0 <= int(target) < n:
        raise ValueError(
            f"target={target}: the checkpoint's head for {model.label!r} has {n} "
            f"classes (0–{n - 1})"
        )
    return int(target)


def _check_head(model: InferenceModel, label: str | None) -> None:
    if model.kind != "finetune":
        raise CheckpointError(
            f"{model.path}: a {model.kind!r} checkpoint has no prediction head to explain; pass a "
            "fine-tuning checkpoint (fit(kind='finetune')) trained on the label you want "
            "attributions for"
        )
    if label is not None and label != model.label:
        raise CheckpointError(
            f"{model.path}: its head predicts {model.label!r}, not {label!r}; use a checkpoint "
            f"fine-tuned on {label!r} (or label={model.label!r})"
        )


def randomised_model(checkpoint, seed: int = 0, device: str = "auto") -> InferenceModel:
    """The checkpoint's architecture with **every** weight re-initialised (encoder and head;
    Adebayo et al. 2018's full model randomisation). Same metadata, so it passes the same
    head and contract checks."""
    from swiftlib.tasks.finetune import FinetuneTask

    if isinstance(checkpoint, InferenceModel):
        model = checkpoint
    else:
        model = load_inference_model(checkpoint, device=device)
    if model.kind != "finetune":
        raise CheckpointError(
            f"{model.path}: randomisation checks need a fine-tuning checkpoint, "
            f"got kind {model.kind!r}"
        )
    torch.manual_seed(seed)
    module = FinetuneTask({**model.config, "init_from": None})
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    rnd = InferenceModel(
        module=module,
        kind=model.kind,
        meta=dict(model.meta),
        config=dict(model.config),
        path=f"{model.path} (randomised, seed {seed})",
        data=dict(model.data),
    )
    return rnd.to(next(model.module.parameters()).device)
