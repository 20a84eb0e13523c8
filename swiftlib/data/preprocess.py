"""Preprocessing: 4D NIfTI / BIDS-fMRIPrep derivatives (MNI space) → a subject store.

Per image: load and validate (4D, finite, enough frames, a plausible TR, MNI space) →
reorient to RAS+ → put on the store lattice (integer crop/pad when the image already lies
on it, nilearn resampling otherwise) → brain mask → normalisation (SwiFT default: global
z-score over in-brain voxels and time, background filled with the in-brain minimum) →
fp16 HDF5 through :class:`~swiftlib.data.store.StoreWriter`.

Subjects run in parallel processes with a progress bar; completed subjects (journal +
checksum) are skipped on a rerun; one subject's failure is reported, never fatal to the
others, and leaves no partial file.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from swiftlib.data.geometry import StoreGeometry, crop_or_pad, store_affine
from swiftlib.data.store import NORM_METHODS, StoreError, StoreWriter
from swiftlib.utils.io import atomic_write_json, read_json

__all__ = [
    "PreprocessConfig",
    "PreprocessError",
    "PreprocessReport",
    "ScanInput",
    "discover_inputs",
    "load_bold",
    "prepare_subject",
    "normalise",
    "preprocess",
]

log = logging.getLogger(__name__)

_MNI_CODES = {2: "aligned", 3: "talairach", 4: "mni", 5: "template"}
_TR_RANGE_S = (0.1, 10.0)


class PreprocessError(ValueError):
    """One input file cannot be preprocessed; the message names the file and the problem."""


@dataclass
class PreprocessConfig:
    """How images become store volumes. Defaults are SwiFT's: 2 mm, 96³, global z-score."""

    voxel_size: float = 2.0  # mm, isotropic store voxels
    grid: tuple[int, int, int] = (96, 96, 96)  # store grid (D, H, W)
    normalisation: str = "zscore_global"  # one of NORM_METHODS
    mask: str = "auto"  # "auto" | "mni" | path to a mask NIfTI
    min_frames: int = 20  # refuse scans shorter than one window
    tr: float | None = None  # seconds; overrides header and sidecar
    assume_mni: bool = False  # skip the MNI-space check (you vouch for it)
    n_jobs: int = 1  # parallel processes

    def __post_init__(self):
        self.grid = tuple(int(g) for g in self.grid)
        if len(self.grid) != 3 or min(self.grid) < 1:
            raise PreprocessError(f"grid={self.grid}: expected three positive sizes (D, H, W)")
        if not self.voxel_size > 0:
            raise PreprocessError(f"voxel_size={self.voxel_size}: expected a positive size in mm")
        if self.normalisation not in NORM_METHODS:
            raise PreprocessError(f"normalisation={self.normalisation!r}: expected one of {NORM_METHODS}")
        if self.mask not in ("auto", "mni") and not Path(self.mask).exists():
            raise PreprocessError(f"mask={self.mask!r}: expected 'auto', 'mni' or an existing NIfTI mask file")
        if self.min_frames < 1:
            raise PreprocessError(f"min_frames={self.min_frames}: expected ≥ 1")
        if self.tr is not None and not (_TR_RANGE_S[0] <= self.tr <= _TR_RANGE_S[1]):
            raise PreprocessError(f"tr={self.tr}: expected seconds in {_TR_RANGE_S}")
        if self.n_jobs < 1:
            raise PreprocessError(f"n_jobs={self.n_jobs}: expected ≥ 1")


@dataclass(frozen=True)
class ScanInput:
    subject_id: str  # store key (unique per scan)
    participant_id: str  # the person (splits group by this)
    path: str
    sidecar: str | None = None


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


# -- discovery ----------------------------------------------------------------------------
_NII = re.compile(r"\.nii(\.gz)?$")


def _entities(name: str) -> dict[str, str]:
    stem = _NII.sub("", Path(name).name)
    return dict(p.split("-", 1) for p in stem.split("_") if "-" in p)


def discover_inputs(input_path) -> list[ScanInput]:
    """Find 4D images: one NIfTI file, a BIDS(-derivatives) tree, or a flat folder."""
    root = Path(input_path)
    if not root.exists():
        raise PreprocessError(f"{root}: no such file or folder")
    if root.is_file():
        files = [root]
    elif (root / "dataset_description.json").exists() or any(root.glob("sub-*/")):
        from nilearn.interfaces.bids import get_bids_files

        files = [Path(p) for p in get_bids_files(root, file_tag="bold", file_type="nii*", modality_folder="func")]
        preproc = [p for p in files if _entities(p.name).get("desc") == "preproc"]
        files = preproc or files
        mni = [p for p in files if _entities(p.name).get("space", "").startswith("MNI")]
        files = mni or files
    else:
        files = sorted(p for p in root.iterdir() if _NII.search(p.name))
    if not files:
        raise PreprocessError(
            f"{root}: no 4D NIfTI images found; expected a .nii/.nii.gz file, a folder of them, "
            "or a BIDS derivatives folder with sub-*/func/*_bold.nii.gz"
        )
    scans = []
    for p in sorted(files):
        ent = _entities(p.name)
        participant = f"sub-{ent['sub']}" if "sub" in ent else _NII.sub("", p.name)
        sidecar = Path(_NII.sub(".json", str(p)))
        scans.append(ScanInput(participant, participant, str(p), str(sidecar) if sidecar.exists() else None))
    counts: dict[str, int] = {}
    for s in scans:
        counts[s.participant_id] = counts.get(s.participant_id, 0) + 1
    out = []
    for s in scans:  # several scans of one person: key each scan by its other entities
        if counts[s.participant_id] > 1:
            ent = _entities(Path(s.path).name)
            extra = "_".join(f"{k}-{v}" for k, v in ent.items() if k in ("ses", "task", "acq", "run", "echo"))
            s = ScanInput(f"{s.participant_id}_{extra}" if extra else _NII.sub("", Path(s.path).name),
                          s.participant_id, s.path, s.sidecar)
        out.append(s)
    keys = [s.subject_id for s in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise PreprocessError(f"{root}: several images map to the same subject key {dup}; rename them")
    return out


# -- loading and validation ---------------------------------------------------------------
def load_bold(path, sidecar=None, tr=None, min_frames=1, assume_mni=False):
    """Load and validate one 4D image. Returns ``(data (X, Y, Z, T) float32, affine, tr)``
    in RAS+ orientation. Raises :class:`PreprocessError` naming the file and the problem."""
    import nibabel as nib

    path = str(path)
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises several types for "not an image"
        raise PreprocessError(f"{path}: not a readable NIfTI image ({type(e).__name__}: {e}); expected .nii or .nii.gz") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PreprocessError(f"{path}: is a {type(img).__name__}; expected a NIfTI-1/2 image")
    if len(img.shape) != 4:
        raise PreprocessError(f"{path}: image is {len(img.shape)}D with shape {img.shape}; expected 4D (X, Y, Z, T) fMRI")
    T = img.shape[3]
    if T < min_frames:
        raise PreprocessError(f"{path}: {T} frames; expected at least {min_frames} (one window of sequence_length)")
    tr_s = _read_tr(img, path, sidecar, tr)
    if not assume_mni:
        _check_mni(img, path)
    img = nib.as_closest_canonical(img)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as e:
        raise PreprocessError(f"{path}: truncated or corrupt file ({type(e).__name__}: {e}); expected a complete NIfTI") from None
    bad = ~np.isfinite(data)
    if bad.any():
        raise PreprocessError(f"{path}: {int(bad.sum())} NaN/Inf voxel values; expected finite data (check the preprocessing that wrote it)")
    return data, img.affine, tr_s


def _read_tr(img, path, sidecar, tr) -> float:
    if tr is not None:
        return float(tr)
    source = None
    value = None
    if sidecar and Path(sidecar).exists():
        meta = read_json(sidecar)
        if "RepetitionTime" in meta:
            value, source = float(meta["RepetitionTime"]), f"sidecar {sidecar} RepetitionTime"
    if value is None:
        zoom = float(img.header.get_zooms()[3])
        unit = img.header.get_xyzt_units()[1]
        scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
        value, source = zoom * scale, f"header pixdim[4]={zoom} ({unit})"
    if not value or value <= 0:
        raise PreprocessError(f"{path}: TR is missing ({source}); expected seconds > 0 — pass tr= / --tr")
    if not (_TR_RANGE_S[0] <= value <= _TR_RANGE_S[1]):
        raise PreprocessError(
            f"{path}: TR={value:g} s from {source} is implausible; expected {_TR_RANGE_S[0]}–{_TR_RANGE_S[1]} s "
            "(milliseconds written as seconds?) — pass the right tr= / --tr"
        )
    return value


def _check_mni(img, path) -> None:
    """Refuse native (scanner) space: sform/qform codes must name a standard space, or the
    file name must carry a ``space-MNI…`` entity (fMRIPrep)."""
    ent = _entities(Path(path).name)
    if ent.get("space", "").upper().startswith("MNI"):
        return
    s_code = int(img.header["sform_code"])
    q_code = int(img.header["qform_code"])
    if s_code in _MNI_CODES or q_code in _MNI_CODES:
        return
    raise PreprocessError(
        f"{path}: looks like native (scanner) space (sform_code={s_code}, qform_code={q_code}, "
        "no space-MNI… in the name); expected an image normalised to MNI space (e.g. fMRIPrep "
        "--output-spaces MNI152NLin2009cAsym). If it is in MNI space, pass assume_mni=True / --assume-mni"
    )


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
        raise PreprocessError(f"{name}: the brain mask is empty on the store grid; expected brain voxels inside the grid")
    std_all = float(brain.std(dtype=np.float64))
    if std_all == 0.0 or not np.isfinite(std_all):
        raise PreprocessError(f"{name}: the brain has zero variance (every in-brain value is {float(brain.flat[0]):g}); expected a real BOLD series")
    stats: dict = {"method": method}
    if method == "zscore_global":
        mean = float(brain.mean(dtype=np.float64))
        z = (brain - mean) / std_all
        stats.update(mean=mean, std=std_all)
    elif method == "zscore_voxel":
        mu = brain.mean(axis=1, keepdims=True)  # (N, 1)
        sd = brain.std(axis=1, keepdims=True)  # (N, 1)
        z = np.where(sd > 0, (brain - mu) / np.where(sd > 0, sd, 1.0), 0.0)
        stats.update(mean=float(mu.mean()), std=float(sd.mean()), constant_voxels=int((sd == 0).sum()))
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


def _mask_on_store(mask_spec: str, affine, grid) -> np.ndarray:
    import nibabel as nib
    from nilearn.image import resample_img

    if mask_spec == "mni":
        from nilearn.datasets import load_mni152_brain_mask

        img = load_mni152_brain_mask(resolution=2)
    else:
        img = nib.load(mask_spec)
    res = resample_img(img, target_affine=affine, target_shape=tuple(grid), interpolation="nearest",
                       force_resample=True, copy_header=True)
    return np.asarray(res.dataobj) > 0


def prepare_subject(data, affine, cfg: PreprocessConfig, name: str = "image", store_aff=None):
    """Source data (X, Y, Z, T) RAS+ → ``(bold (D, H, W, T) float32, mask, geometry, stats)``."""
    grid = cfg.grid
    store_aff = store_affine(grid, cfg.voxel_size) if store_aff is None else store_aff
    geom = StoreGeometry.build(grid, cfg.voxel_size, store_aff, data.shape[:3], affine)
    if geom.offset is not None:  # on the lattice: exact integer crop/pad
        vol = crop_or_pad(data, geom.offset, grid)  # (D, H, W, T)
        fov = crop_or_pad(np.ones(data.shape[:3], bool), geom.offset, grid, fill=False)  # (D, H, W)
    else:
        import nibabel as nib
        from nilearn.image import resample_img

        log.info("%s: not on the %g mm store lattice; resampling", name, cfg.voxel_size)
        kw = dict(target_affine=store_aff, target_shape=grid, force_resample=True, copy_header=True)
        vol = np.asarray(resample_img(nib.Nifti1Image(data, affine), interpolation="continuous", **kw).dataobj, np.float32)
        fov = np.asarray(resample_img(nib.Nifti1Image(np.ones(data.shape[:3], np.uint8), affine), interpolation="nearest", **kw).dataobj) > 0
    if cfg.mask == "auto":
        nonzero = np.any(vol != 0, axis=3)  # (D, H, W)
        if fov.sum() and (~nonzero & fov).sum() >= 0.1 * fov.sum():  # skull-stripped (zeros outside brain)
            mask = nonzero
        else:
            import nibabel as nib
            from nilearn.masking import compute_epi_mask

            mask = np.asarray(compute_epi_mask(nib.Nifti1Image(vol, store_aff)).dataobj) > 0
    else:
        mask = _mask_on_store(cfg.mask, store_aff, grid)
    mask &= fov
    if geom.offset is not None:
        lost = int(np.any(data != 0, axis=3).sum()) - int(np.any(vol != 0, axis=3).sum())
        if lost > 0:
            log.warning("%s: %d non-zero voxels fall outside the %s store grid", name, lost, grid)
    bold, stats = normalise(vol, mask, cfg.normalisation, name=name)
    return bold, mask, geom, stats


# -- the driver ---------------------------------------------------------------------------
def _process_one(scan: ScanInput, root: str, cfg: PreprocessConfig):
    try:
        data, affine, tr = load_bold(scan.path, scan.sidecar, cfg.tr, cfg.min_frames, cfg.assume_mni)
        bold, mask, geom, stats = prepare_subject(data, affine, cfg, name=scan.path)
        writer = StoreWriter(root, cfg.grid, cfg.voxel_size, geom.affine_array, cfg.normalisation)
        writer.write_subject(scan.subject_id, bold, mask, geom, tr, stats, source=scan.path)
        return scan.subject_id, None
    except (PreprocessError, StoreError) as e:
        return scan.subject_id, str(e)
    except MemoryError:
        return scan.subject_id, f"{scan.path}: out of memory; use fewer n_jobs"


def preprocess(input_path, out, phenotype=None, dataset: str = "custom", config: PreprocessConfig | None = None,
               progress: bool = True) -> PreprocessReport:
    """Preprocess every image under ``input_path`` into the store ``out``. Resumable.

    Returns a :class:`PreprocessReport` (also written to ``out/preprocess_report.json``);
    failed subjects are listed with their reason while the others are stored.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from swiftlib.data.registry import get_dataset

    cfg = config or PreprocessConfig()
    out = Path(out)
    scans = discover_inputs(input_path)
    adapter = get_dataset(dataset)
    _check_existing(out, cfg)
    report = PreprocessReport(store=str(out))
    if phenotype is not None:
        table = adapter.load_phenotype(phenotype)
        known = set(table["subject_id"].astype(str))
        keep = []
        for s in scans:
            if s.participant_id in known:
                keep.append(s)
            else:
                report.failed[s.subject_id] = f"{s.path}: participant {s.participant_id!r} is not in the phenotype table {phenotype}"
        scans = keep
        labels = {k: v for k, v in adapter.store_labels(table).items() if k in table.columns}
    else:
        table = pd.DataFrame({"subject_id": sorted({s.participant_id for s in scans})})
        labels = {}
    writer = StoreWriter(out, cfg.grid, cfg.voxel_size, store_affine(cfg.grid, cfg.voxel_size), cfg.normalisation)
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
        writer.finalize(pd.DataFrame(rows), labels=labels, dataset_info={"adapter": adapter.name, "config": _cfg_dict(cfg)},
                        records=records)
    atomic_write_json(out / "preprocess_report.json", report.to_dict())
    for sid, reason in report.failed.items():
        log.error("failed %s: %s", sid, reason)
    log.info("preprocess: %d written, %d skipped (already done), %d failed -> %s",
             len(report.written), len(report.skipped), len(report.failed), out)
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


def _check_existing(out: Path, cfg: PreprocessConfig) -> None:
    """Refuse to mix geometries or normalisations in one store."""
    m = out / "manifest.json"
    if not m.exists():
        return
    man = json.loads(m.read_text())
    for key, want in (("grid", list(cfg.grid)), ("voxel_size", cfg.voxel_size), ("normalisation", cfg.normalisation)):
        if man.get(key) != want:
            raise PreprocessError(
                f"{out}: existing store has {key}={man.get(key)!r} but this run asks for {want!r}; "
                "use another output folder or the same settings"
            )
