"""Per-scan quality control: the ``qc.tsv`` table written beside a store.

Columns (one row per scan):

``subject_id``, ``participant_id``
    the scan's store key and the person it belongs to (splits group by the person).
``source``
    the NIfTI file it came from.
``frames_source``, ``tr_source``
    frames and repetition time (s) of the file as acquired.
``frames``, ``tr``
    frames and TR in the store, after censoring (``--denoise scrubbing``) and temporal
    resampling (``--target-tr``); a window of ``sequence_length`` frames spans
    ``sequence_length · tr`` seconds.
``frames_censored``
    high-motion frames removed by scrubbing (0 otherwise).
``mean_fd``
    mean framewise displacement in mm (fMRIPrep's confounds table; empty without one):
    how much the head moved from one frame to the next, on average. Around 0.1–0.2 mm is
    typical at rest; scans above about 0.5 mm are often excluded.
``coverage``
    the fraction of the MNI152 brain mask (2 mm) inside the scan's brain mask on the store
    grid. Near 1 for a whole-brain scan; a partial field of view (a few slices, a cropped
    cerebellum) or a misregistered image gives less. Below :data:`COVERAGE_WARN_BELOW`
    preprocessing warns, naming the file.
``denoise``
    the confound strategy used, or empty.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from swiftlib.utils.io import atomic_path

__all__ = ["COVERAGE_WARN_BELOW", "QC_COLUMNS", "mni_coverage", "write_qc", "qc_table"]

COVERAGE_WARN_BELOW = 0.5
QC_FILE = "qc.tsv"
QC_COLUMNS = (
    "subject_id",
    "participant_id",
    "source",
    "frames_source",
    "tr_source",
    "frames",
    "tr",
    "frames_censored",
    "mean_fd",
    "coverage",
    "denoise",
)


@functools.lru_cache(maxsize=1)
def _mni_mask_world() -> np.ndarray:
    """World coordinates (mm) of the MNI152 2 mm brain-mask voxels: (N, 4) homogeneous."""
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    ijk = np.argwhere(np.asarray(img.dataobj) > 0)  # (N, 3)
    return np.c_[ijk, np.ones(len(ijk))] @ np.asarray(img.affine).T  # (N, 4)


def mni_coverage(mask: np.ndarray, affine) -> float:
    """Fraction of the MNI152 brain mask (2 mm voxels) whose centres fall in an in-mask voxel
    of ``mask`` (D, H, W) with voxel→MNI ``affine``."""
    world = _mni_mask_world()  # (N, 4)
    ijk = np.rint(world @ np.linalg.inv(np.asarray(affine, float)).T)[:, :3].astype(int)  # (N, 3)
    inside = np.all((ijk >= 0) & (ijk < np.array(mask.shape)), axis=1)
    hit = np.zeros(len(ijk), bool)
    hit[inside] = mask[tuple(ijk[inside].T)]
    return float(hit.mean())


def write_qc(root, rows: list[dict], keep: set[str]) -> Path:
    """Merge ``rows`` into ``root/qc.tsv`` (atomically): rows of this run replace earlier rows
    of the same scan; scans not in ``keep`` (no longer in the store) are dropped."""
    import pandas as pd

    path = Path(root) / QC_FILE
    old = pd.read_csv(path, sep="\t", dtype={"subject_id": str}) if path.exists() else None
    new = pd.DataFrame(rows, columns=list(QC_COLUMNS))
    if old is not None:
        old = old[~old["subject_id"].isin(new["subject_id"])]
        new = pd.concat([old, new], ignore_index=True) if len(new) else old
    new = new[new["subject_id"].isin(keep)].sort_values("subject_id").reset_index(drop=True)
    with atomic_path(path, suffix=".tsv.tmp") as tmp:
        new.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    return path


def qc_table(store):
    """The QC table of an open store: ``qc.tsv`` when preprocessing wrote one, else computed
    from the store itself (frames, TR, coverage; no motion without confounds)."""
    import pandas as pd

    path = Path(store.root) / QC_FILE
    if path.exists():
        table = pd.read_csv(path, sep="\t", dtype={"subject_id": str, "participant_id": str})
        return table[table["subject_id"].isin(store.subject_ids)].reset_index(drop=True)
    rows = []
    for sid in store.subject_ids:
        rows.append(
            {
                "subject_id": sid,
                "participant_id": str(store.subjects.loc[sid, "participant_id"]),
                "source": "",
                "frames_source": store.num_frames(sid),
                "tr_source": store.tr(sid),
                "frames": store.num_frames(sid),
                "tr": store.tr(sid),
                "frames_censored": 0,
                "mean_fd": np.nan,
                "coverage": mni_coverage(store.mask(sid), store.affine),
                "denoise": "",
            }
        )
    return pd.DataFrame(rows, columns=list(QC_COLUMNS))
