"""Preprocessing: 4D NIfTI / BIDS-fMRIPrep derivatives (MNI space) → a subject store.

Per image: load and validate (4D, finite, enough frames, a plausible TR, MNI space, the
template it is in) → reorient into the layout's voxel order (RAS+ for ``mni_ras``, LAS for
``swift_v1``; :mod:`swiftlib.data.layouts`) → put on the store grid (integer crop/pad when
the image already lies on its lattice, nilearn resampling otherwise) → brain mask →
normalisation (SwiFT default: global z-score over in-brain voxels and time, background
filled with the in-brain minimum) → fp16 HDF5 through :class:`~swiftlib.data.store.StoreWriter`.

Subjects run in parallel processes with a progress bar; completed subjects (journal +
checksum) are skipped on a rerun; one subject's failure is reported, never fatal to the
others, and leaves no partial file. Settings that would make a store inconsistent (another
layout or template than the store already has, several templates in one input) are refused
before anything is written.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from swiftlib.data.geometry import StoreGeometry, crop_or_pad
from swiftlib.data.inputs import (
    TR_RANGE_S,
    PreprocessError,
    ScanInput,
    discover_inputs,
    load_bold,
    load_scan,
    read_template,
)
from swiftlib.data.layouts import DEFAULT_LAYOUT, KNOWN_TEMPLATES, UNKNOWN_TEMPLATE, get_layout
from swiftlib.data.store import NORM_METHODS, StoreError, StoreWriter
from swiftlib.utils.io import atomic_write_json
from swiftlib.utils.validation import check_choice

__all__ = [
    "PreprocessConfig",
    "PreprocessError",
    "PreprocessReport",
    "ScanInput",
    "discover_inputs",
    "load_bold",
    "prepare_subject",
    "normalise",
    "zscore_swift_v1",
    "read_template",
    "preprocess",
]

log = logging.getLogger(__name__)


@dataclass
class PreprocessConfig:
    """How images become store volumes. Defaults are SwiFT's: 2 mm, 96³, global z-score.

    ``layout``: the store's voxel convention (:mod:`swiftlib.data.layouts`): ``"mni_ras"``
    (default) or ``"swift_v1"`` (SwiFT v1's exact input, for its checkpoints).
    ``template``: ``"auto"`` reads each image's template from its BIDS ``space-`` entity or
    JSON sidecar; a TemplateFlow name (e.g. ``"MNI152NLin6Asym"``) selects that space's
    files in a BIDS tree and declares it for files that do not say (a file that names
    another template is refused).
    """

    voxel_size: float = 2.0  # mm, isotropic store voxels
    grid: tuple[int, int, int] = (96, 96, 96)  # store grid (D, H, W)
    normalisation: str = "zscore_global"  # one of NORM_METHODS
    mask: str = "auto"  # "auto" | "mni" | path to a mask NIfTI
    min_frames: int = 20  # refuse scans shorter than one window
    tr: float | None = None  # seconds; overrides header and sidecar
    assume_mni: bool = False  # skip the MNI-space check (you vouch for it)
    n_jobs: int = 1  # parallel processes
    layout: str = DEFAULT_LAYOUT  # store voxel convention: "mni_ras" | "swift_v1"
    template: str = "auto"  # "auto" | a TemplateFlow MNI name | "unknown"

    def __post_init__(self):
        try:
            layout = get_layout(self.layout)
            check_choice("template", self.template, ("auto", *KNOWN_TEMPLATES))
        except ValueError as e:
            raise PreprocessError(str(e)) from None
        self.grid = tuple(int(g) for g in self.grid)
        if len(self.grid) != 3 or min(self.grid) < 1:
            raise PreprocessError(f"grid={self.grid}: expected three positive sizes (D, H, W)")
        if not self.voxel_size > 0:
            raise PreprocessError(f"voxel_size={self.voxel_size}: expected a positive size in mm")
        if self.normalisation not in NORM_METHODS:
            raise PreprocessError(
                f"normalisation={self.normalisation!r}: expected one of {NORM_METHODS}"
            )
        if self.mask not in ("auto", "mni") and not Path(self.mask).exists():
            raise PreprocessError(
                f"mask={self.mask!r}: expected 'auto', 'mni' or an existing NIfTI mask file"
            )
        if self.min_frames < 1:
            raise PreprocessError(f"min_frames={self.min_frames}: expected ≥ 1")
        if self.tr is not None and not (TR_RANGE_S[0] <= self.tr <= TR_RANGE_S[1]):
            raise PreprocessError(f"tr={self.tr}: expected seconds in {TR_RANGE_S}")
        if self.n_jobs < 1:
            raise PreprocessError(f"n_jobs={self.n_jobs}: expected ≥ 1")
        try:
            layout.check(self.grid, self.voxel_size, self.normalisation)
        except ValueError as e:
            raise PreprocessError(str(e)) from None


@dataclass
class PreprocessReport:
    store: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done (checksum verified)
    failed: dict[str, str] = field(default_factory=dict)  # subject_id -> reason

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return asdict(self)


# -- the per-subject transform --------------------------------------------------------------
def normalise(data: np.ndarray, mask: np.ndarray, method: str, name: str = "image"):
    """Normalise ``data`` (D, H, W, T) inside ``mask`` (D, H, W). Returns ``(out, stats)``.

    ``zscore_global``: (x − mean) / std over brain voxels and time (SwiFT); ``zscore_voxel``:
    per voxel over time (constant voxels → 0); ``psc``: percent signal change per voxel,
    100 · (x − mean_t) / mean_t — the BOLD fluctuation itself, free of the static intensity
    pattern and scanner scale, amplitudes kept (voxels whose time mean is below 1 % of the
    brain's median are set to 0 and counted); ``none``. The background is filled with the
    in-brain minimum (SwiFT's convention) so it reads as "darker than any brain voxel";
    with ``psc`` it is 0 (no signal change).
    """
    brain = data[mask]  # (N, T) in-brain time series
    if brain.size == 0:
        raise PreprocessError(
            f"{name}: the brain mask is empty on the store grid; expected brain voxels inside the "
            "grid"
        )
    std_all = float(brain.std(dtype=np.float64))
    if std_all == 0.0 or not np.isfinite(std_all):
        raise PreprocessError(
            f"{name}: the brain has zero variance (every in-brain value is "
            f"{float(brain.flat[0]):g}); expected a real BOLD series"
        )
    stats: dict = {"method": method}
    if method == "zscore_global":
        mean = float(brain.mean(dtype=np.float64))
        z = (brain - mean) / std_all
        stats.update(mean=mean, std=std_all)
    elif method == "zscore_voxel":
        mu = brain.mean(axis=1, keepdims=True)  # (N, 1)
        sd = brain.std(axis=1, keepdims=True)  # (N, 1)
        z = np.where(sd > 0, (brain - mu) / np.where(sd > 0, sd, 1.0), 0.0)
        stats.update(
            mean=float(mu.mean()), std=float(sd.mean()), constant_voxels=int((sd == 0).sum())
        )
    elif method == "psc":
        mu = brain.mean(axis=1, keepdims=True, dtype=np.float64)  # (N, 1)
        ok = mu > 0.01 * np.median(mu)
        z = np.where(ok, (brain - mu) / np.where(ok, mu, 1.0) * 100.0, 0.0).astype(np.float32)
        stats.update(mean=float(mu.mean()), low_mean_voxels=int((~ok).sum()))
    elif method == "none":
        z = brain
    else:
        raise PreprocessError(f"normalisation={method!r}: expected one of {NORM_METHODS}")
    fill = 0.0 if method == "psc" else float(z.min())
    out = np.full(data.shape, fill, dtype=np.float32)
    out[mask] = z
    stats["fill_value"] = fill
    return out, stats


def zscore_swift_v1(data: np.ndarray, mask: np.ndarray, name: str = "image"):
    """SwiFT v1's global z-score, value for value (the ``swift_v1`` layout's arithmetic).

    ``data`` (D, H, W, T) float32, ``mask`` (D, H, W). The brain is every **non-zero** value
    inside ``mask``, element-wise in space and time (v1 treats each exact zero as background,
    so an in-brain voxel that is 0 in one frame is background in that frame). Mean and
    standard deviation are taken over those values the way v1 takes them — torch, float32,
    the unbiased (n − 1) standard deviation — then ``(x − mean) / std`` in float32, and every
    background value becomes the in-brain minimum. Returns ``(out float32, stats)``.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))  # (D, H, W, T)
    in_mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))  # (D, H, W)
    brain = in_mask[..., None] & (x != 0)  # (D, H, W, T)
    values = x[brain]  # (N,) in C order, as v1 gathers them
    if values.numel() < 2:
        raise PreprocessError(
            f"{name}: {values.numel()} non-zero in-brain values on the store grid; expected a brain"
        )
    mean, std = values.mean(), values.std()  # float32; std unbiased, as torch's default in v1
    if not (float(std) > 0 and np.isfinite(float(std))):
        raise PreprocessError(
            f"{name}: the brain has zero variance (every in-brain value is {float(values[0]):g}); "
            "expected a real BOLD series"
        )
    # = min over the brain of (x - mean) / std (rounding is monotone)
    fill = (values.min() - mean) / std
    del values
    out = (x - mean) / std  # (D, H, W, T) float32
    out.masked_fill_(~brain, fill)
    zeros_in_mask = int(in_mask.sum()) * x.shape[3] - int(brain.sum())  # in-brain exact zeros
    stats = {
        "method": "zscore_global",
        "arithmetic": "swift_v1",
        "mean": float(mean),
        "std": float(std),
        "fill_value": float(fill),
        "zero_values_in_mask": zeros_in_mask,
    }
    return out.numpy(), stats


def _mask_on_store(mask_spec: str, affine, grid) -> np.ndarray:
    import nibabel as nib
    from nilearn.image import resample_img

    if mask_spec == "mni":
        from nilearn.datasets import load_mni152_brain_mask

        img = load_mni152_brain_mask(resolution=2)
    else:
        img = nib.load(mask_spec)
    res = resample_img(
        img,
        target_affine=affine,
        target_shape=tuple(grid),
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    return np.asarray(res.dataobj) > 0


def prepare_subject(
    data, affine, cfg: PreprocessConfig, name: str = "image", store_aff=None, source_axcodes=None
):
    """Source data (X, Y, Z, T) in the layout's voxel order (:func:`load_bold` with the
    layout's ``axcodes``) → ``(bold (D, H, W, T) float32, mask, geometry, stats)``.
    ``source_axcodes``: the file's own voxel order when it was reoriented (recorded in the
    geometry so maps go back onto the file's grid)."""
    import nibabel as nib

    grid = cfg.grid
    layout = get_layout(cfg.layout)
    store_aff = layout.store_affine(grid, cfg.voxel_size) if store_aff is None else store_aff
    src_codes = "".join(nib.aff2axcodes(affine))
    if src_codes != layout.axcodes:  # a mirrored placement would follow silently: refuse
        raise PreprocessError(
            f"{name}: the source is in {src_codes} voxel order; layout {layout.name!r} "
            f"stores {layout.axcodes} — load it with load_bold(..., axcodes={layout.axcodes!r})"
        )
    geom = StoreGeometry.build(
        grid, cfg.voxel_size, store_aff, data.shape[:3], affine, source_axcodes
    )
    if geom.axcodes != layout.axcodes:
        raise PreprocessError(
            f"{name}: the store affine is in {geom.axcodes} voxel order; layout "
            f"{layout.name!r} stores {layout.axcodes}"
        )
    if geom.offset is not None:  # on the lattice: exact integer crop/pad
        vol = crop_or_pad(data, geom.offset, grid)  # (D, H, W, T)
        fov = crop_or_pad(np.ones(data.shape[:3], bool), geom.offset, grid, fill=False)  # (D, H, W)
    else:
        from nilearn.image import resample_img

        log.info("%s: not on the %g mm store lattice; resampling", name, cfg.voxel_size)
        kw = dict(target_affine=store_aff, target_shape=grid, force_resample=True, copy_header=True)
        vol = np.asarray(
            resample_img(nib.Nifti1Image(data, affine), interpolation="continuous", **kw).dataobj,
            np.float32,
        )
        fov = (
            np.asarray(
                resample_img(
                    nib.Nifti1Image(np.ones(data.shape[:3], np.uint8), affine),
                    interpolation="nearest",
                    **kw,
                ).dataobj
            )
            > 0
        )
    if cfg.mask == "auto":
        nonzero = np.any(vol != 0, axis=3)  # (D, H, W)
        # skull-stripped (zeros outside brain)
        if fov.sum() and (~nonzero & fov).sum() >= 0.1 * fov.sum():
            mask = nonzero
        else:
            from nilearn.masking import compute_epi_mask

            mask = np.asarray(compute_epi_mask(nib.Nifti1Image(vol, store_aff)).dataobj) > 0
    else:
        mask = _mask_on_store(cfg.mask, store_aff, grid)
    mask &= fov
    if geom.offset is not None:
        lost = int(np.any(data != 0, axis=3).sum()) - int(np.any(vol != 0, axis=3).sum())
        if lost > 0:
            log.warning(
                "%s: %d non-zero voxels fall outside the %s store grid%s",
                name,
                lost,
                grid,
                " (SwiFT v1 counted them in its z-score statistics; these statistics leave them "
                "out)"
                if layout.arithmetic == "swift_v1"
                else "",
            )
    if layout.arithmetic == "swift_v1":
        bold, stats = zscore_swift_v1(vol, mask, name=name)
    else:
        bold, stats = normalise(vol, mask, cfg.normalisation, name=name)
    return bold, mask, geom, stats


# -- the driver ---------------------------------------------------------------------------
def _process_one(scan: ScanInput, root: str, cfg: PreprocessConfig):
    try:
        layout = get_layout(cfg.layout)
        data, affine, tr, file_axcodes = load_scan(
            scan.path, scan.sidecar, cfg.tr, cfg.min_frames, cfg.assume_mni, layout.axcodes
        )
        if file_axcodes != layout.axcodes:
            log.info(
                "%s: %s voxel order reoriented to %s (layout %s)",
                scan.path,
                file_axcodes,
                layout.axcodes,
                layout.name,
            )
        bold, mask, geom, stats = prepare_subject(
            data, affine, cfg, name=scan.path, source_axcodes=file_axcodes
        )
        writer = StoreWriter(
            root,
            cfg.grid,
            cfg.voxel_size,
            geom.affine_array,
            cfg.normalisation,
            layout=layout.name,
            template=scan.template,
        )
        writer.write_subject(scan.subject_id, bold, mask, geom, tr, stats, source=scan.path)
        return scan.subject_id, None
    except (PreprocessError, StoreError) as e:
        return scan.subject_id, str(e)
    except MemoryError:
        return scan.subject_id, f"{scan.path}: out of memory; use fewer n_jobs"


def preprocess(
    input_path,
    out,
    phenotype=None,
    dataset: str = "custom",
    config: PreprocessConfig | None = None,
    progress: bool = True,
) -> PreprocessReport:
    """Preprocess every image under ``input_path`` into the store ``out``. Resumable.

    Returns a :class:`PreprocessReport` (also written to ``out/preprocess_report.json``);
    failed subjects are listed with their reason while the others are stored.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from swiftlib.data.registry import get_dataset

    cfg = config or PreprocessConfig()
    out = Path(out)
    scans = discover_inputs(input_path, template=cfg.template)
    template = scans[0].template  # one per store (discover_inputs refuses several)
    adapter = get_dataset(dataset)
    _check_existing(out, cfg, template)
    report = PreprocessReport(store=str(out))
    if phenotype is not None:
        table = adapter.load_phenotype(phenotype)
        known = set(table["subject_id"].astype(str))
        keep = []
        for s in scans:
            if s.participant_id in known:
                keep.append(s)
            else:
                report.failed[s.subject_id] = (
                    f"{s.path}: participant {s.participant_id!r} is not in the phenotype table "
                    f"{phenotype}"
                )
        scans = keep
        labels = {k: v for k, v in adapter.store_labels(table).items() if k in table.columns}
    else:
        table = pd.DataFrame({"subject_id": sorted({s.participant_id for s in scans})})
        labels = {}
    layout = get_layout(cfg.layout)
    writer = StoreWriter(
        out,
        cfg.grid,
        cfg.voxel_size,
        layout.store_affine(cfg.grid, cfg.voxel_size),
        cfg.normalisation,
        layout=layout.name,
        template=template,
    )
    done = writer.completed(verify=True)
    todo = [s for s in scans if s.subject_id not in done]
    report.skipped = sorted(s.subject_id for s in scans if s.subject_id in done)
    if todo:
        bar = tqdm(total=len(todo), desc="preprocess", unit="subject", disable=not progress)
        if cfg.n_jobs == 1:
            results = (_process_one(s, str(out), cfg) for s in todo)
            for sid, err in results:
                _record(report, sid, err)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=cfg.n_jobs) as pool:
                futs = [pool.submit(_process_one, s, str(out), cfg) for s in todo]
                for fut in as_completed(futs):
                    _record(report, *fut.result())
                    bar.update()
        bar.close()
    records = writer.completed(verify=False)
    scan_by_id = {s.subject_id: s for s in scans}
    rows = []
    pheno = table.set_index(table["subject_id"].astype(str))
    for sid in sorted(records):
        scan = scan_by_id.get(sid)
        participant = scan.participant_id if scan else sid
        row = pheno.loc[participant].to_dict() if participant in pheno.index else {}
        row.update(subject_id=sid, participant_id=participant)
        row.setdefault("dataset", adapter.name)
        rows.append(row)
    report.written.sort()
    if records:
        writer.finalize(
            pd.DataFrame(rows),
            labels=labels,
            dataset_info={"adapter": adapter.name, "config": _cfg_dict(cfg)},
            records=records,
        )
    atomic_write_json(out / "preprocess_report.json", report.to_dict())
    for sid, reason in report.failed.items():
        log.error("failed %s: %s", sid, reason)
    log.info(
        "preprocess: %d written, %d skipped (already done), %d failed -> %s",
        len(report.written),
        len(report.skipped),
        len(report.failed),
        out,
    )
    return report


def _record(report: PreprocessReport, sid: str, err: str | None) -> None:
    if err is None:
        report.written.append(sid)
    else:
        report.failed[sid] = err


def _cfg_dict(cfg: PreprocessConfig) -> dict:
    d = asdict(cfg)
    d["grid"] = list(cfg.grid)
    return d


def _check_existing(out: Path, cfg: PreprocessConfig, template: str = UNKNOWN_TEMPLATE) -> None:
    """Refuse to mix geometries, layouts, templates or normalisations in one store — a
    finished one (its manifest) or an interrupted one (its first written subject). A store
    written before templates were recorded takes this run's."""
    have = _existing_settings(out)
    if have is None:
        return
    want = {
        "grid": list(cfg.grid),
        "voxel_size": cfg.voxel_size,
        "normalisation": cfg.normalisation,
        "layout": cfg.layout,
        "template": template,
    }
    for key, value in want.items():
        if key in have and have[key] != value:
            raise PreprocessError(
                f"{out}: existing store has {key}={have[key]!r} but this run asks for {value!r}; "
                "use another output folder or the same settings"
            )


def _existing_settings(out: Path) -> dict | None:
    m = out / "manifest.json"
    if m.exists():
        man = json.loads(m.read_text())
        have = {k: man[k] for k in ("grid", "voxel_size", "normalisation", "template") if k in man}
        have["layout"] = man.get("layout", DEFAULT_LAYOUT)
        return have
    written = sorted((out / "subjects").glob("*.h5")) if (out / "subjects").is_dir() else []
    if not written:
        return None
    import h5py

    with h5py.File(written[0], "r") as f:
        geom = json.loads(f.attrs["geometry"])
        have = {
            "grid": list(geom["grid"]),
            "voxel_size": float(geom["voxel_size"]),
            "normalisation": str(f.attrs["normalisation"]),
            "layout": str(f.attrs.get("layout", DEFAULT_LAYOUT)),
        }
        if "template" in f.attrs:
            have["template"] = str(f.attrs["template"])
    return have
