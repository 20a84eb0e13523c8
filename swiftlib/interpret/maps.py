"""From window attributions to the maps a researcher reads: per subject, per target class
and for the group, on the store grid, and back to the subjects' source MNI grid.

Each window's map ``(D, H, W, T)`` is reduced over time (mean of absolute values for
``aggregate="abs"``, signed otherwise) and averaged over the subject's windows; subjects
are then averaged (all of them, and per target class). ``"subject_abs"`` keeps each
subject's map signed and averages their magnitudes: a connectivity effect flips the sign of
x·∂y/∂x from subject to subject and would cancel in a signed group mean.
:meth:`Attributions.to_nifti` puts a map back on the **source MNI grid** through the store
geometry (an exact crop/pad inverse).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from swiftlib.interpret.inference import InferenceModel

__all__ = ["Attributions", "MapAccumulator"]

log = logging.getLogger(__name__)

MNI_XFORM_CODE = 4  # NIfTI xform code "mni_152"


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
                raise KeyError(
                    f"no class map for target {which[1]!r}; available: {sorted(self.class_maps)}"
                )
            return self.class_maps[which[1]]
        if which == "group":
            return self.group_map
        if which in self.subject_maps:
            return self.subject_maps[which]
        raise KeyError(
            f"map {which!r}: expected 'group', ('class', k) or one of the subjects "
            f"{list(self.subject_maps)[:5]}…"
        )

    def to_nifti(self, which="group", space: str = "source", interpolation: str = "continuous"):
        """A map as NIfTI (sform/qform code MNI; the header's ``descrip`` says which grid).

        ``space="source"``: the subjects' source grid (the file's shape, voxel order and
        affine) — the exact inverse of the store's crop/pad and reorientation when their
        images lay on the store lattice; when they were resampled onto the store grid, the map
        is resampled back with nilearn (``interpolation``: ``"continuous"``, ``"linear"`` or
        ``"nearest"``), an approximation. ``"store"``: the store grid with its MNI affine, the
        voxels the model saw, whatever the store's layout.
        """
        data = np.asarray(self.map(which), dtype=np.float32)
        img = self.geometry.to_nifti(data, space=space, interpolation=interpolation)
        img.set_sform(img.affine, code=MNI_XFORM_CODE)
        img.set_qform(img.affine, code=MNI_XFORM_CODE)
        if space == "store":
            img.header["descrip"] = b"swiftlib attribution: store grid, MNI affine (space='store')"
        elif self.geometry.resampled:
            img.header["descrip"] = b"swiftlib attribution: resampled to the source grid (nilearn)"
        else:
            img.header["descrip"] = b"swiftlib attribution: source grid (exact inverse)"
        return img

    def save(
        self,
        out_dir,
        space: str = "source",
        subjects: bool = False,
        interpolation: str = "continuous",
    ) -> dict[str, Path]:
        """Write the group map, the class maps (and each subject's map when ``subjects``) as
        ``attribution_<name>.nii.gz`` in ``space`` (see :meth:`to_nifti`), ``time_curves.csv``
        and ``attribution_space.json`` (the grid the maps are on and a note on how they got
        there); returns ``{name: path}``."""
        import nibabel as nib

        from swiftlib.utils.io import atomic_write_json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        items = {"group": "group", **{f"class{k}": ("class", k) for k in self.class_maps}}
        if subjects:
            items.update({s: s for s in self.subject_maps})
        written = {}
        for name, which in items.items():
            path = out / f"attribution_{name}.nii.gz"
            img = self.to_nifti(which, space=space, interpolation=interpolation)
            nib.save(img, path)
            written[name] = path
        curves = out / "time_curves.csv"
        self.time_curves.to_csv(curves, index=False)
        written["time_curves"] = curves
        g = self.geometry
        if space == "store":
            note = (
                f"Maps on the store grid {list(g.grid)} ({g.voxel_size:g} mm voxels, {g.axcodes} "
                "voxel order) with the store's MNI affine: the voxels the model saw, no "
                "interpolation."
            )
            if g.resampled:
                note += (
                    " The subjects' images were resampled onto this grid (their voxels were not on "
                    "its lattice), so no exact way back exists; space='source' resamples the maps "
                    "onto the source grid with nilearn."
                )
        elif g.resampled:
            note = (
                "Maps resampled from the store grid onto the subjects' source grid "
                f"{list(g.file_shape)} with nilearn ({interpolation} interpolation): an "
                "approximation, because the subjects were resampled onto the store grid; "
                "space='store' keeps the maps as the model saw them."
            )
        else:
            note = (
                f"Maps on the subjects' source grid {list(g.file_shape)} (the file's voxel order "
                f"{g.source_axcodes or g.axcodes} and affine): the exact inverse of the store's "
                "crop/pad and reorientation; voxels outside the store grid are 0."
            )
        log.info("attribution maps -> %s: %s", out, note)
        info = out / "attribution_space.json"
        atomic_write_json(
            info,
            {
                "space": space,
                "resampled_inputs": g.resampled,
                "interpolation": interpolation if space == "source" and g.resampled else None,
                "shape": list(img.shape),
                "affine": np.asarray(img.affine).tolist(),
                "note": note,
            },
        )
        written["space"] = info
        return written


# ---------------------------------------------------------------------------------------------


class MapAccumulator:
    """Collects window attributions batch by batch and builds :class:`Attributions`.

    Args:
        model: the explained model (its task decides how outputs become predictions).
        store: the store the windows come from (grid, masks, geometry).
        subject_ids: the subjects explained (each gets at least one window).
        aggregate: ``"abs"``, ``"signed"`` or ``"subject_abs"`` (module docstring).
        keep_window_maps: also keep every ``(D, H, W, T)`` window map (memory!).
    """

    def __init__(
        self,
        model: InferenceModel,
        store,
        subject_ids: list[str],
        aggregate: str,
        keep_window_maps: bool = False,
    ):
        self.model = model
        self.subject_ids = list(subject_ids)
        self.aggregate = aggregate
        self.keep_window_maps = keep_window_maps
        self.geometries = [store.geometry(s) for s in self.subject_ids]
        if any(g != self.geometries[0] for g in self.geometries[1:]):
            log.warning(
                "subjects have different source geometries; maps go back to the first "
                "subject's source grid"
            )
        self.brain = np.zeros(store.grid, dtype=bool)
        for s in self.subject_ids:
            self.brain |= store.mask(s)
        self._brain_t: torch.Tensor | None = None
        self.sums = {s: np.zeros(store.grid, dtype=np.float64) for s in self.subject_ids}
        self.counts = dict.fromkeys(self.subject_ids, 0)
        self.targets: dict = {}
        self.outputs: dict = {}
        self.curves: list = []
        self.window_maps: list = []
        self.window_index: list = []

    def add(
        self, subject_ids, window_starts, maps: torch.Tensor, outputs: torch.Tensor, targets
    ) -> None:
        """One batch: ``maps (B, D, H, W, T)``, the model's ``outputs (B, num_outputs)`` and
        the explained output index of each window."""
        import pandas as pd

        if self._brain_t is None or self._brain_t.device != maps.device:
            self._brain_t = torch.from_numpy(self.brain).to(maps.device)
        r = maps.abs() if self.aggregate == "abs" else maps
        frame_vals = r[:, self._brain_t].mean(dim=1).cpu().numpy()  # (B, V, T) -> (B, T)
        vol = r.mean(dim=-1).cpu().numpy()  # (B, D, H, W, T) -> (B, D, H, W)
        if self.model.task == "classification":
            outputs = outputs.softmax(-1)
        for k, sid in enumerate(subject_ids):
            self.sums[sid] += vol[k]
            self.counts[sid] += 1
            self.targets.setdefault(sid, int(targets[k]))
            self.outputs.setdefault(sid, []).append(outputs[k].numpy())
            start = int(window_starts[k])
            self.curves.append(
                pd.DataFrame(
                    {
                        "subject_id": sid,
                        "window_start": start,
                        "frame": np.arange(frame_vals.shape[1]),
                        "value": frame_vals[k],
                    }
                )
            )
            if self.keep_window_maps:
                self.window_maps.append(maps[k].cpu().numpy())
                self.window_index.append((sid, start))

    def result(self, params: dict) -> Attributions:
        """Subject, class and group maps of everything added (``params`` kept as is)."""
        import pandas as pd

        sids = self.subject_ids
        subject_maps = {s: (self.sums[s] / self.counts[s]).astype(np.float32) for s in sids}
        pooled = subject_maps
        if self.aggregate == "subject_abs":  # signed within a subject, magnitude across
            pooled = {s: np.abs(m) for s, m in subject_maps.items()}
        class_maps = {}
        for t in sorted(set(self.targets.values())):
            members = [pooled[s] for s in sids if self.targets[s] == t]
            class_maps[t] = np.mean(members, axis=0).astype(np.float32)
        group = np.mean([pooled[s] for s in sids], axis=0).astype(np.float32)
        predictions = {s: self._prediction(np.mean(v, axis=0)) for s, v in self.outputs.items()}
        curves = pd.concat(self.curves, ignore_index=True)
        return Attributions(
            subject_maps,
            class_maps,
            group,
            curves,
            dict(self.targets),
            predictions,
            self.brain,
            self.geometries[0],
            self.window_maps,
            self.window_index,
            params,
        )

    def _prediction(self, mean_out: np.ndarray) -> float:
        """A subject's prediction: P(class 1) (binary), the class (multi-class) or the
        regression value in label units."""
        if self.model.task == "classification":
            return float(mean_out[1]) if len(mean_out) == 2 else float(mean_out.argmax())
        std = float(self.model.config.get("target_std", 1.0))
        return float(mean_out[0]) * std + float(self.model.config.get("target_mean", 0.0))
