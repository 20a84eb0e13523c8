"""The synthetic cohort: BOLD-like 4D fMRI in MNI space with planted, known label signals.

A learnable stand-in for UKB/HCP so that every notebook, test and teaching run works with
no data access. Each subject's scan is built in MNI152 space at ``voxel_size`` mm:

* **anatomy** — nilearn's bundled MNI152 brain mask; a smooth baseline intensity inside it
  and exact zeros outside (like fMRIPrep's masked outputs);
* **networks** — a handful of spatially smooth Gaussian "regions" (σ = ``region_sigma_mm``)
  at fixed MNI coordinates, each driven by a band-limited (0.01–0.1 Hz) time course;
* **noise** — AR(1) temporal noise, per-subject network amplitudes (subject variability)
  and per-site intensity scale and noise level (a ``site`` column);
* **planted labels** —
  ``sex`` (binary): the *connectivity* between ``sex_a`` (left motor) and ``sex_b`` (right
  motor) — correlation ``sex_coupling`` for sex = 1, ``baseline_coupling`` for sex = 0;
  ``age`` (continuous, years): the fluctuation *amplitude* of ``age`` (precuneus/PCC)
  grows linearly with age; ``null_label`` (binary): independent of everything (negative
  control).

Ground-truth region masks are written as NIfTI in MNI space beside the store
(``ground_truth/``) with ``ground_truth.json`` saying which label each mask drives.
Deterministic by seed, bit for bit: subject ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from swiftlib.data.geometry import store_affine
from swiftlib.data.preprocess import PreprocessConfig, prepare_subject
from swiftlib.data.store import StoreWriter
from swiftlib.utils.io import atomic_path, atomic_write_json

__all__ = [
    "SyntheticConfig",
    "REGIONS",
    "LABELS",
    "default_grid",
    "source_space",
    "region_maps",
    "subject_table",
    "make_subject",
    "make_synthetic_cohort",
]

log = logging.getLogger(__name__)

# name -> (MNI centre in mm, role). Roles other than "background" drive a label.
REGIONS: dict[str, tuple[tuple[float, float, float], str]] = {
    "sex_a": ((-38.0, -22.0, 56.0), "sex"),  # left motor cortex
    "sex_b": ((38.0, -22.0, 56.0), "sex"),  # right motor cortex
    "age": ((0.0, -56.0, 30.0), "age"),  # precuneus / posterior cingulate
    "visual": ((0.0, -84.0, 6.0), "background"),
    "mpfc": ((0.0, 50.0, 0.0), "background"),
    "parietal_l": ((-44.0, -62.0, 40.0), "background"),
    "parietal_r": ((44.0, -62.0, 40.0), "background"),
}
LABELS = {
    "sex": {
        "task": "classification",
        "num_classes": 2,
        "description": "connectivity between sex_a and sex_b (left/right motor)",
    },
    "age": {
        "task": "regression",
        "description": "fluctuation amplitude of the age region (precuneus)",
    },
    "null_label": {
        "task": "classification",
        "num_classes": 2,
        "description": "no signal (negative control)",
    },
}
_SITE_SCALE = (1.0, 1.25, 0.8, 1.1, 0.9)
_SITE_NOISE = (1.0, 1.5, 0.8, 1.2, 1.0)


def default_grid(voxel_size: float) -> tuple[int, int, int]:
    """The store grid for a resolution: 96³ at 2 mm (SwiFT), 48³ at 4 mm; otherwise the
    smallest multiple of 8 covering the MNI brain (≈ 146 × 180 × 156 mm)."""
    known = {2.0: (96, 96, 96), 4.0: (48, 48, 48)}
    if float(voxel_size) in known:
        return known[float(voxel_size)]
    extent = np.array([148.0, 182.0, 158.0])
    return tuple(int(8 * np.ceil(e / voxel_size / 8)) for e in extent)


@dataclass
class SyntheticConfig:
    """The synthetic cohort. Defaults: a CPU-sized 4 mm cohort (48³ grid)."""

    num_subjects: int = 40  # subjects (≥ 4)
    seed: int = 0  # everything derives from it
    voxel_size: float = 4.0  # mm; 2.0 gives the real SwiFT 96³ layout
    grid: tuple[int, int, int] | None = None  # store grid; None = default_grid(voxel_size)
    num_frames: int = 60  # frames per scan
    tr: float = 0.8  # seconds (UKB/HCP-like multiband)
    num_sites: int = 3  # sites (≤ 5)
    region_sigma_mm: float = 8.0  # spatial smoothness of each region
    signal_pct: float = 3.0  # network signal, % of baseline
    tissue_contrast: float = 0.25  # spatial variation of the baseline intensity (fraction)
    noise_pct: float = 1.0  # AR(1) noise std, % of baseline (× site factor)
    ar_coef: float = 0.4  # AR(1) coefficient of the noise
    sex_coupling: float = 0.9  # sex_a–sex_b correlation for sex = 1
    baseline_coupling: float = 0.0  # … for sex = 0
    age_range: tuple[float, float] = (45.0, 80.0)  # years, uniform
    age_gain: float = 0.8  # amplitude change of the age region per age SD
    normalisation: str = "zscore_global"
    bands_hz: tuple[float, float] = field(default=(0.01, 0.1))

    def __post_init__(self):
        if self.num_subjects < 4:
            raise ValueError(
                f"num_subjects={self.num_subjects}: expected ≥ 4 (splits need subjects)"
            )
        if not 1 <= self.num_sites <= len(_SITE_SCALE):
            raise ValueError(f"num_sites={self.num_sites}: expected 1–{len(_SITE_SCALE)}")
        if self.num_frames < 8:
            raise ValueError(f"num_frames={self.num_frames}: expected ≥ 8")
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size={self.voxel_size}: expected > 0 mm")
        nyquist = 0.5 / self.tr
        if self.bands_hz[0] >= min(self.bands_hz[1], nyquist):
            raise ValueError(
                f"bands_hz={self.bands_hz} is empty at tr={self.tr} s (Nyquist {nyquist:.3f} Hz)"
            )
        self.grid = (
            default_grid(self.voxel_size) if self.grid is None else tuple(int(g) for g in self.grid)
        )
        self.age_range = tuple(float(a) for a in self.age_range)
        self.bands_hz = tuple(float(b) for b in self.bands_hz)

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(
            voxel_size=self.voxel_size,
            grid=self.grid,
            normalisation=self.normalisation,
            mask="auto",
            min_frames=1,
        )


def source_space(voxel_size: float):
    """The MNI152 brain mask on the ``voxel_size`` lattice: ``(mask (X, Y, Z) bool, affine)``."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    mni = load_mni152_brain_mask(resolution=2)
    aff0 = mni.affine
    # smooth edges at coarse grids
    mni = nib.Nifti1Image(np.asarray(mni.dataobj, dtype=np.float32), aff0)
    lo = aff0[:3, 3]
    hi = lo + (np.array(mni.shape) - 1) * 2.0
    origin = np.ceil(lo / voxel_size) * voxel_size  # lattice point: world 0 is a voxel centre
    shape = tuple(int(v) for v in np.floor((hi - origin) / voxel_size) + 1)
    aff = np.eye(4)
    aff[:3, :3] = np.diag([voxel_size] * 3)
    aff[:3, 3] = origin
    with warnings.catch_warnings():  # continuous on purpose: a smooth edge, thresholded below
        warnings.simplefilter("ignore", UserWarning)
        img = resample_img(
            mni,
            target_affine=aff,
            target_shape=shape,
            interpolation="continuous",
            force_resample=True,
            copy_header=True,
        )
    return np.asarray(img.dataobj) > 0.5, aff


def region_maps(mask: np.ndarray, affine: np.ndarray, sigma_mm: float):
    """Smooth spatial maps of every region on the source grid: ``(R, X, Y, Z)`` float32 in
    [0, 1] (zero outside the brain), in ``REGIONS`` order."""
    ijk = np.indices(mask.shape).reshape(3, -1).T  # (V, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]  # (V, 3) world mm
    centres = np.array([c for c, _ in REGIONS.values()])  # (R, 3)
    d2 = ((xyz[None, :, :] - centres[:, None, :]) ** 2).sum(-1)  # (R, V)
    maps = np.exp(-d2 / (2 * sigma_mm**2)).astype(np.float32)
    return maps.reshape((len(REGIONS),) + mask.shape) * mask[None]  # (R, X, Y, Z)


def subject_table(cfg: SyntheticConfig):
    """Labels and sites for every subject (depends only on the seed)."""
    import pandas as pd

    rng = np.random.default_rng([cfg.seed, 10**6])
    n = cfg.num_subjects
    sex = rng.permutation(np.arange(n) % 2)
    age = np.round(rng.uniform(*cfg.age_range, size=n), 1)
    null = rng.permutation(np.arange(n) % 2)
    site = rng.permutation(np.arange(n) % cfg.num_sites)
    return pd.DataFrame(
        {
            "subject_id": [f"sub-{i + 1:04d}" for i in range(n)],
            "dataset": "synthetic",
            "site": [f"site-{chr(65 + s)}" for s in site],
            "sex": sex.astype(int),
            "age": age,
            "null_label": null.astype(int),
        }
    )


def _band_limited(rng, num: int, T: int, tr: float, band) -> np.ndarray:
    """``num`` unit-variance time courses with power only in ``band`` Hz: (num, T)."""
    pad = T + 64
    spec = np.fft.rfft(rng.standard_normal((num, pad)), axis=1)
    freqs = np.fft.rfftfreq(pad, d=tr)
    spec[:, (freqs < band[0]) | (freqs > band[1])] = 0
    x = np.fft.irfft(spec, n=pad, axis=1)[:, 32 : 32 + T]  # (num, T)
    x -= x.mean(axis=1, keepdims=True)
    return x / x.std(axis=1, keepdims=True)


def make_subject(i: int, row, cfg: SyntheticConfig, mask, affine, maps) -> np.ndarray:
    """Subject ``i``'s raw BOLD on the source grid: (X, Y, Z, T) float32, zero outside the brain."""
    from scipy.signal import lfilter

    rng = np.random.default_rng([cfg.seed, i])
    T, R = cfg.num_frames, len(REGIONS)
    names = list(REGIONS)
    courses = _band_limited(
        rng, R + 1, T, cfg.tr, cfg.bands_hz
    )  # (R+1, T); last = independent part
    a, b = names.index("sex_a"), names.index("sex_b")
    rho = cfg.sex_coupling if int(row["sex"]) == 1 else cfg.baseline_coupling
    courses[b] = rho * courses[a] + np.sqrt(1 - rho**2) * courses[R]  # planted connectivity
    amps = rng.uniform(0.8, 1.2, size=R)  # subject variability
    age_z = (float(row["age"]) - np.mean(cfg.age_range)) / (np.diff(cfg.age_range)[0] / np.sqrt(12))
    amps[names.index("age")] = max(0.1, 1.0 + cfg.age_gain * age_z)  # planted amplitude
    site = ord(str(row["site"])[-1]) - 65
    vox = np.flatnonzero(mask.ravel())  # (N,) in-brain voxel indices
    weights = maps.reshape(R, -1)[:, vox].T  # (N, R)
    coords = np.argwhere(mask) / np.array(mask.shape)  # (N, 3) in [0, 1)
    tissue = np.cos(3.0 * coords[:, 0]) * np.sin(2.0 * coords[:, 1] + 1.0)  # smooth, in [-1, 1]
    baseline = 800.0 * (1.0 + cfg.tissue_contrast * tissue)
    baseline *= _SITE_SCALE[site] * rng.uniform(0.95, 1.05)
    signal = weights @ (amps[:, None] * courses[:R])  # (N, T)
    noise_sd = cfg.noise_pct / 100.0 * _SITE_NOISE[site]
    noise = lfilter([1.0], [1.0, -cfg.ar_coef], rng.standard_normal((len(vox), T)), axis=1)
    noise *= noise_sd * np.sqrt(1 - cfg.ar_coef**2)  # unit-variance AR(1) → noise_sd
    bold = baseline[:, None] * (1.0 + cfg.signal_pct / 100.0 * signal + noise)  # (N, T)
    out = np.zeros(mask.size * T, np.float32).reshape(-1, T)  # (X*Y*Z, T)
    out[vox] = bold
    return out.reshape(mask.shape + (T,))  # (X, Y, Z, T)


def _write_ground_truth(root: Path, mask, affine, maps, cfg: SyntheticConfig) -> dict:
    import nibabel as nib

    gt = root / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    regions = {}
    for k, (name, (centre, role)) in enumerate(REGIONS.items()):
        fname = f"region_{name}.nii.gz"
        with atomic_path(gt / fname, suffix=".nii.gz") as tmp:
            nib.save(nib.Nifti1Image((maps[k] >= 0.5).astype(np.uint8), affine), tmp)
        regions[name] = {
            "file": fname,
            "centre_mm": list(centre),
            "drives": None if role == "background" else role,
        }
    with atomic_path(gt / "brain_mask.nii.gz", suffix=".nii.gz") as tmp:
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp)
    info = {
        "space": "MNI152 (nilearn bundled brain mask)",
        "voxel_size_mm": cfg.voxel_size,
        "labels": {
            "sex": {
                "mechanism": "connectivity",
                "regions": ["sex_a", "sex_b"],
                "effect": (
                    f"corr(sex_a, sex_b) = {cfg.sex_coupling} "
                    f"if sex == 1 else {cfg.baseline_coupling}"
                ),
            },
            "age": {
                "mechanism": "amplitude",
                "regions": ["age"],
                "effect": f"amplitude = 1 + {cfg.age_gain} * z(age)",
            },
            "null_label": {"mechanism": "none", "regions": [], "effect": "independent of the data"},
        },
        "regions": regions,
        "brain_mask": "brain_mask.nii.gz",
        "config": _cfg_dict(cfg),
    }
    atomic_write_json(gt / "ground_truth.json", info)
    return info


#: The settings a synthetic store was generated with (a resume must match them).
SETTINGS_FILE = "synthetic_settings.json"


def _check_or_clear(root: Path, want: dict, overwrite: bool, export_nifti) -> None:
    """Refuse to resume a synthetic store generated with other settings (naming each
    difference), or with ``overwrite`` delete it (and the NIfTI export) to start again."""
    from swiftlib.data.store_settings import clear_store
    from swiftlib.utils.io import read_json

    written = (root / "subjects").is_dir() and any((root / "subjects").iterdir())
    if not written and not (root / "manifest.json").exists():
        return
    have = read_json(root / SETTINGS_FILE) if (root / SETTINGS_FILE).exists() else None
    if have == want:
        return
    if not overwrite:
        if have is None:
            why = "it was made by another swiftlib version (no synthetic_settings.json)"
        else:
            why = "; ".join(
                f"{k}={have.get(k)!r} there, {want.get(k)!r} now"
                for k in sorted(set(have) | set(want))
                if have.get(k) != want.get(k)
            )
        raise ValueError(
            f"{root}: holds a synthetic cohort made with other settings ({why}); pass "
            "overwrite=True (swiftlib synth --overwrite) to make it again, or choose another "
            "output folder"
        )
    removed = clear_store(root)
    for name in (SETTINGS_FILE, "ground_truth"):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if export_nifti and Path(export_nifti).is_dir():
        shutil.rmtree(export_nifti)
    log.warning("%s: overwrite: removed the earlier synthetic cohort (%s)", root, removed)


def _cfg_dict(cfg: SyntheticConfig) -> dict:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _export_nifti(root: Path, sid: str, raw: np.ndarray, affine, tr: float) -> None:
    import nibabel as nib

    func = root / sid / "func"
    func.mkdir(parents=True, exist_ok=True)
    name = f"{sid}_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    img = nib.Nifti1Image(raw, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    with atomic_path(func / name, suffix=".nii.gz") as tmp:
        nib.save(img, tmp)
    atomic_write_json(
        func / name.replace(".nii.gz", ".json"), {"RepetitionTime": tr, "TaskName": "rest"}
    )


def make_synthetic_cohort(
    out_dir,
    config: SyntheticConfig | None = None,
    export_nifti=None,
    export_subjects: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    **overrides,
):
    """Generate the cohort into the store ``out_dir``; returns the opened store.

    ``export_nifti``: also write the raw scans as a BIDS-derivatives-like tree there
    (``sub-XX/func/sub-XX_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz``
    + ``participants.tsv``) so ``swiftlib preprocess`` can be exercised on them;
    ``export_subjects`` limits the export to the first N subjects (NIfTI is bulky).
    Resumable: subjects already in the store are not regenerated — when the store was made
    with the same settings (``synthetic_settings.json``). A store made with other settings is
    refused, naming each difference, unless ``overwrite=True`` (the store and the export are
    made again): a rerun never leaves subjects of two cohorts in one store.
    """
    from tqdm.auto import tqdm

    cfg = config or SyntheticConfig(**overrides)
    if config is not None and overrides:
        raise TypeError("pass either config= or keyword overrides, not both")
    root = Path(out_dir)
    _check_or_clear(root, _cfg_dict(cfg), overwrite, export_nifti)
    mask, affine = source_space(cfg.voxel_size)
    maps = region_maps(mask, affine, cfg.region_sigma_mm)
    table = subject_table(cfg)
    pcfg = cfg.preprocess_config()
    store_aff = store_affine(cfg.grid, cfg.voxel_size)
    writer = StoreWriter(root, cfg.grid, cfg.voxel_size, store_aff, cfg.normalisation)
    atomic_write_json(root / SETTINGS_FILE, _cfg_dict(cfg))
    gt = _write_ground_truth(root, mask, affine, maps, cfg)
    done = writer.completed(verify=False)
    export = Path(export_nifti) if export_nifti else None
    for i, row in tqdm(
        list(table.iterrows()), desc="synthetic cohort", unit="subject", disable=not progress
    ):
        sid = row["subject_id"]
        want_export = export is not None and (export_subjects is None or i < export_subjects)
        exported = want_export and (export / sid / "func").exists()
        if sid in done and (not want_export or exported):
            continue
        raw = make_subject(i, row, cfg, mask, affine, maps)
        if want_export and not exported:
            _export_nifti(export, sid, raw, affine, cfg.tr)
        if sid not in done:
            bold, bmask, geom, stats = prepare_subject(
                raw, affine, pcfg, name=sid, store_aff=store_aff
            )
            writer.write_subject(
                sid, bold, bmask, geom, cfg.tr, stats, source=f"synthetic seed={cfg.seed} i={i}"
            )
    if export is not None:
        export.mkdir(parents=True, exist_ok=True)
        with atomic_path(export / "participants.tsv") as tmp:
            part = table if export_subjects is None else table.iloc[:export_subjects]
            part.rename(columns={"subject_id": "participant_id"}).to_csv(tmp, sep="\t", index=False)
        atomic_write_json(
            export / "dataset_description.json",
            {
                "Name": "swiftlib synthetic cohort",
                "BIDSVersion": "1.8.0",
                "DatasetType": "derivative",
            },
        )
    store = writer.finalize(
        table,
        labels=LABELS,
        dataset_info={
            "adapter": "synthetic",
            "ground_truth": "ground_truth/ground_truth.json",
            "synthetic": gt["config"],
        },
    )
    log.info(
        "synthetic cohort: %d subjects, grid %s at %g mm -> %s",
        len(store),
        cfg.grid,
        cfg.voxel_size,
        root,
    )
    return store
