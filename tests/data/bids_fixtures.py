"""Tiny fMRIPrep-style derivatives built on the fly: multi-session/run BOLD files in MNI space
with sidecars and ``desc-confounds_timeseries`` tables (motion, WM/CSF, cosine drifts,
framewise displacement, DVARS, aCompCor with its JSON metadata).

Axis sizes are distinct (22, 26, 21) at 8 mm — an ellipsoid "brain" about the size of the
MNI brain — so a swapped axis fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SHAPE = (22, 26, 21)  # X, Y, Z at 8 mm, RAS+, on the 8 mm MNI lattice
GRID = (24, 28, 22)  # the store grid the tests use (8 mm)
VOXEL = 8.0
ORIGIN = (-88.0, -120.0, -64.0)  # multiples of 8 mm: the scans lie on the store lattice
SPACE = "MNI152NLin2009cAsym"


def bold_name(sub, task="rest", ses=None, run=None, space=SPACE) -> str:
    ent = [f"sub-{sub}"] + ([f"ses-{ses}"] if ses else []) + [f"task-{task}"]
    ent += [f"run-{run}"] if run else []
    return "_".join(ent + [f"space-{space}", "desc-preproc_bold.nii.gz"])


def confounds_name(bold: str) -> str:
    keep = [p for p in bold.split("_") if p.split("-")[0] in ("sub", "ses", "task", "acq", "run")]
    return "_".join(keep + ["desc-confounds_timeseries.tsv"])


def make_bold(num_frames: int, seed: int, tr: float = 1.0, axcodes: str = "RAS"):
    """A (10, 12, 9, T) MNI-space image: a blob brain with slow fluctuations plus motion-like
    confound signals; ``axcodes`` "LAS" stores the same voxels in FSL order."""
    rng = np.random.default_rng(seed)
    X, Y, Z = SHAPE
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    centre, radii = (11.0, 14.5, 9.0), (9.5, 12.0, 8.5)  # voxels
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip((ii, jj, kk), centre, radii)) < 1
    t = np.arange(num_frames) * tr
    slow = np.sin(2 * np.pi * 0.05 * t + rng.uniform(0, 6, size=(X, Y, Z, 1)))  # (X, Y, Z, T)
    data = 500 + 20 * slow + rng.normal(0, 5, size=(X, Y, Z, num_frames))
    data = np.where(brain[..., None], data, 0).astype(np.float32)
    aff = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    aff[:3, 3] = ORIGIN
    if axcodes == "LAS":
        data = data[::-1]
        aff[0, 0], aff[0, 3] = -VOXEL, ORIGIN[0] + (X - 1) * VOXEL
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    img.set_sform(aff, code=4)
    img.set_qform(aff, code=4)
    return img


def make_confounds(num_frames: int, seed: int, tr: float = 1.0) -> tuple[pd.DataFrame, dict]:
    """fMRIPrep's confounds table and its JSON metadata (what nilearn's strategies read)."""
    rng = np.random.default_rng(seed + 1000)
    cols: dict[str, np.ndarray] = {}
    for name in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"):
        x = np.cumsum(rng.normal(0, 0.02, num_frames))
        d = np.r_[np.nan, np.diff(x)]
        cols[name], cols[f"{name}_derivative1"] = x, d
        cols[f"{name}_power2"], cols[f"{name}_derivative1_power2"] = x**2, d**2
    for name in ("white_matter", "csf", "global_signal"):
        x = rng.normal(0, 1, num_frames)
        d = np.r_[np.nan, np.diff(x)]
        cols[name], cols[f"{name}_derivative1"] = x, d
        cols[f"{name}_power2"], cols[f"{name}_derivative1_power2"] = x**2, d**2
    fd = np.abs(rng.normal(0.1, 0.05, num_frames))
    fd[num_frames // 2] = 0.9  # one motion spike: scrubbing removes it
    fd[0] = np.nan
    cols["framewise_displacement"] = fd
    cols["std_dvars"] = np.r_[np.nan, np.abs(rng.normal(1.0, 0.1, num_frames - 1))]
    n = np.arange(num_frames)
    for k in range(3):  # DCT drifts (fMRIPrep's high-pass regressors)
        cols[f"cosine{k:02d}"] = np.cos(np.pi * (n + 0.5) * (k + 1) / num_frames)
    meta = {}
    for k in range(4):
        cols[f"a_comp_cor_{k:02d}"] = rng.normal(0, 1, num_frames)
        meta[f"a_comp_cor_{k:02d}"] = {
            "Method": "aCompCor",
            "Mask": "combined",
            "Retained": True,
            "CumulativeVarianceExplained": 0.1 * (k + 1),
        }
    return pd.DataFrame(cols), meta


def write_scan(func_dir: Path, sub, num_frames, seed, tr=1.0, confounds=True, **entities) -> Path:
    """One fMRIPrep-named scan (+ sidecar, + confounds TSV/JSON when ``confounds``)."""
    func_dir.mkdir(parents=True, exist_ok=True)
    name = bold_name(sub, **entities)
    path = func_dir / name
    nib.save(make_bold(num_frames, seed, tr), path)
    sidecar = {"RepetitionTime": tr, "SkullStripped": True}
    (func_dir / name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    if confounds:
        table, meta = make_confounds(num_frames, seed, tr)
        tsv = func_dir / confounds_name(name)
        table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
        tsv.with_suffix(".json").write_text(json.dumps(meta))
    return path


def make_derivatives(root: Path, runs: dict) -> Path:
    """``runs``: ``{sub: [dict(ses=…, task=…, run=…, num_frames=…, tr=…, seed=…), …]}``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0", "DatasetType": "derivative"})
    )
    for sub, scans in runs.items():
        for spec in scans:
            spec = dict(spec)
            ses = spec.get("ses")
            func = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "func"
            write_scan(func, sub, spec.pop("num_frames"), spec.pop("seed"), **spec)
    return root
