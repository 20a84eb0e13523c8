"""Inputs of preprocessing: find the scans (one NIfTI, a folder, a BIDS-fMRIPrep tree), read
what each says about itself (template, TR, MNI space) and load it in a layout's voxel order.

Every problem is a :class:`PreprocessError` naming the file, what it holds and what was
expected.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swiftlib.data.layouts import KNOWN_TEMPLATES, UNKNOWN_TEMPLATE
from swiftlib.utils.io import read_json

__all__ = [
    "PreprocessError",
    "ScanInput",
    "discover_inputs",
    "read_template",
    "load_bold",
    "load_scan",
    "scan_tr",
    "filter_scans",
]

log = logging.getLogger(__name__)

MNI_CODES = {2: "aligned", 3: "talairach", 4: "mni", 5: "template"}
TR_RANGE_S = (0.1, 10.0)


class PreprocessError(ValueError):
    """One input file cannot be preprocessed; the message names the file and the problem."""


@dataclass(frozen=True)
class ScanInput:
    subject_id: str  # store key (unique per scan)
    participant_id: str  # the person (splits group by this)
    path: str
    sidecar: str | None = None
    template: str = UNKNOWN_TEMPLATE  # from the space- entity or the sidecar


# -- discovery ----------------------------------------------------------------------------
_NII = re.compile(r"\.nii(\.gz)?$")


def _entities(name: str) -> dict[str, str]:
    stem = _NII.sub("", Path(name).name)
    return dict(p.split("-", 1) for p in stem.split("_") if "-" in p)


def read_template(path, sidecar=None) -> str:
    """The MNI template an image is in: its BIDS ``space-`` entity (fMRIPrep names files
    ``…_space-MNI152NLin2009cAsym_…``), else its JSON sidecar's ``SpatialReference`` (BIDS
    derivatives; a name, a TemplateFlow URL or ``{"URI": …}``) or ``Space``/``Template``
    field; ``"unknown"`` when none names a known template (``layouts.KNOWN_TEMPLATES``)."""
    space = _entities(Path(path).name).get("space")
    if space is not None:
        return space if space in KNOWN_TEMPLATES else UNKNOWN_TEMPLATE
    if sidecar and Path(sidecar).exists():
        meta = read_json(sidecar)
        for key in ("SpatialReference", "Space", "Template"):
            value = meta.get(key)
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value or "")
            for name in sorted(KNOWN_TEMPLATES, key=len, reverse=True):  # longest first
                if re.search(rf"(?<![A-Za-z0-9]){name}(?![A-Za-z0-9])", text):
                    return name
    return UNKNOWN_TEMPLATE


def _assign_templates(root: Path, files: list[Path], template: str) -> list[tuple[Path, str]]:
    """Each file with its template; one template per store (refused otherwise). A declared
    ``template`` keeps that space's files when names carry several spaces, fills in files
    that do not say, and refuses a file that names another."""
    if template != "auto":
        spaces = {_entities(p.name).get("space") for p in files}
        if template in spaces and len(spaces) > 1:
            files = [p for p in files if _entities(p.name).get("space") == template]
    out = []
    for p in files:
        side = Path(_NII.sub(".json", str(p)))
        found = read_template(p, side if side.exists() else None)
        if template != "auto":
            if found not in (UNKNOWN_TEMPLATE, template):
                raise PreprocessError(
                    f"{p}: is in template {found} (from its name or sidecar) but "
                    f"template={template!r} was asked for; one store holds one template — drop "
                    "--template to read it from the files, or preprocess these images into another "
                    "store"
                )
            found = template
        out.append((p, found))
    found_all = sorted({t for _, t in out})
    if len(found_all) > 1:
        counts = {t: sum(1 for _, x in out if x == t) for t in found_all}
        raise PreprocessError(
            f"{root}: images are in several templates {counts}; one store holds one template — "
            f"pass --template NAME (e.g. {next(t for t in found_all if t != UNKNOWN_TEMPLATE)!r}) "
            "to choose one space in a BIDS tree or to declare it for files that do not say, or "
            "split the input"
        )
    return out


_FILTERS = {"task": "task", "session": "ses", "run": "run"}


def _same_label(value: str, wanted: str) -> bool:
    """BIDS labels compare as text, numbers as numbers (``run-01`` is run 1)."""
    if value.isdigit() and wanted.isdigit():
        return int(value) == int(wanted)
    return value == wanted


def filter_scans(files, root, task=None, session=None, run=None) -> list[Path]:
    """Keep the files whose BIDS ``task-``/``ses-``/``run-`` entities match (``None`` keeps
    all; ``"rest"`` and ``"task-rest"`` both mean ``task-rest``). Nothing left → an error
    naming the filter and the values that exist."""
    files = list(files)
    for name, key in _FILTERS.items():
        wanted = {"task": task, "session": session, "run": run}[name]
        if wanted is None or wanted == "":
            continue
        wanted = str(wanted).removeprefix(f"{key}-")
        kept = [p for p in files if _same_label(_entities(Path(p).name).get(key, ""), wanted)]
        if not kept:
            found = sorted({_entities(Path(p).name).get(key, "(none)") for p in files})
            raise PreprocessError(
                f"{root}: no scan has {key}-{wanted} ({name}={wanted!r}); the scans have "
                f"{key} {found} — pick one of these or drop the filter"
            )
        files = kept
    return files


def discover_inputs(
    input_path, template: str = "auto", task=None, session=None, run=None
) -> list[ScanInput]:
    """Find 4D images: one NIfTI file, a BIDS(-derivatives) tree, or a flat folder.

    Each scan carries its template (:func:`read_template`, or the declared ``template``);
    inputs in several templates are refused (one store holds one template). ``task``,
    ``session``, ``run``: keep only the scans with those BIDS entities
    (:func:`filter_scans`). Several scans of one participant (sessions, tasks, runs) become
    several store subjects keyed ``sub-01_ses-1_task-rest_run-1`` with one participant."""
    root = Path(input_path)
    if not root.exists():
        raise PreprocessError(f"{root}: no such file or folder")
    if root.is_file():
        files = [root]
    elif (root / "dataset_description.json").exists() or any(root.glob("sub-*/")):
        from nilearn.interfaces.bids import get_bids_files

        files = [
            Path(p)
            for p in get_bids_files(root, file_tag="bold", file_type="nii*", modality_folder="func")
        ]
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
    files = filter_scans(files, root, task=task, session=session, run=run)
    scans = []
    for p, tpl in _assign_templates(root, sorted(files), template):
        ent = _entities(p.name)
        participant = f"sub-{ent['sub']}" if "sub" in ent else _NII.sub("", p.name)
        sidecar = Path(_NII.sub(".json", str(p)))
        scans.append(
            ScanInput(
                participant, participant, str(p), str(sidecar) if sidecar.exists() else None, tpl
            )
        )
    counts: dict[str, int] = {}
    for s in scans:
        counts[s.participant_id] = counts.get(s.participant_id, 0) + 1
    out = []
    for s in scans:  # several scans of one person: key each scan by its other entities
        if counts[s.participant_id] > 1:
            ent = _entities(Path(s.path).name)
            extra = "_".join(
                f"{k}-{v}" for k, v in ent.items() if k in ("ses", "task", "acq", "run", "echo")
            )
            s = ScanInput(
                f"{s.participant_id}_{extra}" if extra else _NII.sub("", Path(s.path).name),
                s.participant_id,
                s.path,
                s.sidecar,
                s.template,
            )
        out.append(s)
    keys = [s.subject_id for s in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise PreprocessError(
            f"{root}: several images map to the same subject key {dup}; rename them"
        )
    return out


# -- loading and validation ---------------------------------------------------------------
def load_bold(path, sidecar=None, tr=None, min_frames=1, assume_mni=False, axcodes="RAS"):
    """Load and validate one 4D image. Returns ``(data (X, Y, Z, T) float32, affine, tr)``
    in the voxel order ``axcodes`` (RAS+ by default; ``"LAS"`` for the ``swift_v1`` layout):
    flips and axis swaps only, never interpolation. Raises :class:`PreprocessError` naming
    the file and the problem."""
    data, affine, tr_s, _ = load_scan(path, sidecar, tr, min_frames, assume_mni, axcodes)
    return data, affine, tr_s


def load_scan(
    path, sidecar=None, tr=None, min_frames=1, assume_mni=False, axcodes="RAS", raw=False
):
    """:func:`load_bold` plus the file's own voxel order (e.g. ``"LAS"``): ``(data, affine,
    tr, file_axcodes)``. ``raw=True``: ``data`` holds the file's own numbers (e.g. int16,
    a flipped view when reoriented) when they need no scaling — their float32 values are
    exactly what ``raw=False`` gives, without the float32 copy of the whole scan (scaled
    files come back as float32 either way)."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    path = str(path)
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises several types for "not an image"
        raise PreprocessError(
            f"{path}: not a readable NIfTI image ({type(e).__name__}: {e}); expected .nii or "
            ".nii.gz"
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PreprocessError(f"{path}: is a {type(img).__name__}; expected a NIfTI-1/2 image")
    if len(img.shape) != 4:
        raise PreprocessError(
            f"{path}: image is {len(img.shape)}D with shape {img.shape}; expected 4D (X, Y, Z, T) "
            "fMRI"
        )
    T = img.shape[3]
    if T < min_frames:
        raise PreprocessError(
            f"{path}: {T} frames; expected at least {min_frames} (one window of sequence_length)"
        )
    tr_s, tr_warning = _read_tr(img, path, sidecar, tr)
    if tr_warning:
        log.warning("%s", tr_warning)
    if not assume_mni:
        _check_mni(img, path)
    file_axcodes = "".join(nib.aff2axcodes(img.affine))
    try:  # reorienting reads the voxels too: a truncated file fails there as well
        if file_axcodes != "".join(axcodes):
            img = img.as_reoriented(
                ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(axcodes)))
            )
        data = _voxels(img)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as e:
        raise PreprocessError(
            f"{path}: truncated or corrupt file ({type(e).__name__}: {e}); expected a complete "
            "NIfTI"
        ) from None
    if data.dtype.kind not in "biu":  # integers are finite; floats: min/max see NaN and ±Inf
        lo, hi = np.float32(np.min(data)), np.float32(np.max(data))  # float32: overflow too
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int((~np.isfinite(np.asarray(data, dtype=np.float32))).sum())
            raise PreprocessError(
                f"{path}: {bad} NaN/Inf voxel values; expected finite data (check the "
                "preprocessing that wrote it)"
            )
    if not raw:
        data = np.asarray(data, dtype=np.float32)
    return data, img.affine, tr_s, file_axcodes


def _voxels(img) -> np.ndarray:
    """The image's voxels as ``img.get_fdata(dtype=np.float32)`` would give them, in the
    file's own dtype when that needs no scaling (``float32(x)`` is then the same value)."""
    import nibabel as nib

    obj = img.dataobj
    if isinstance(obj, np.ndarray):  # in memory (a reoriented image): get_fdata casts it
        if obj.dtype.kind in "biu" or obj.dtype == np.float32:
            return obj
        with np.errstate(over="ignore"):  # overflow becomes ±Inf, refused by the caller
            return obj.astype(np.float32)  # e.g. a scaled file's float64
    if nib.is_proxy(obj) and getattr(obj, "slope", None) == 1.0 and obj.inter == 0.0:
        return np.asanyarray(obj)  # the stored numbers, no scaling
    return np.asarray(img.get_fdata(dtype=np.float32))


def scan_tr(path, sidecar=None, tr=None) -> tuple[float, str | None]:
    """A scan's TR in seconds from its header and sidecar alone (no voxels read): ``(tr,
    warning)``; ``warning`` names the file and both values when the sidecar's
    ``RepetitionTime`` and the header's pixdim[4] disagree (the sidecar wins)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for "not an image"
        raise PreprocessError(
            f"{path}: not a readable NIfTI image ({type(e).__name__}: {e})"
        ) from None
    return _read_tr(img, str(path), sidecar, tr)


def _header_tr(img) -> tuple[float, str]:
    zooms = img.header.get_zooms()
    zoom = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1]
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    return zoom * scale, f"header pixdim[4]={zoom:g} ({unit})"


def _read_tr(img, path, sidecar, tr) -> tuple[float, str | None]:
    if tr is not None:
        return float(tr), None
    source = None
    value = None
    warning = None
    if sidecar and Path(sidecar).exists():
        meta = read_json(sidecar)
        if "RepetitionTime" in meta:
            value, source = float(meta["RepetitionTime"]), f"sidecar {sidecar} RepetitionTime"
            header, header_source = _header_tr(img)
            if header > 0 and abs(header - value) > 1e-3 * value:
                warning = (
                    f"{path}: TR {value:g} s from its sidecar RepetitionTime but {header:g} s in "
                    f"its {header_source}; using the sidecar's (pass --tr to choose)"
                )
    if value is None:
        value, source = _header_tr(img)
    if not value or value <= 0:
        raise PreprocessError(
            f"{path}: TR is missing ({source}); expected seconds > 0 — pass tr= / --tr"
        )
    if not (TR_RANGE_S[0] <= value <= TR_RANGE_S[1]):
        raise PreprocessError(
            f"{path}: TR={value:g} s from {source} is implausible; expected "
            f"{TR_RANGE_S[0]}–{TR_RANGE_S[1]} s (milliseconds written as seconds?) — pass the "
            "right tr= / --tr"
        )
    return value, warning


def _check_mni(img, path) -> None:
    """Refuse native (scanner) space: sform/qform codes must name a standard space, or the
    file name must carry a ``space-MNI…`` entity (fMRIPrep)."""
    ent = _entities(Path(path).name)
    if ent.get("space", "").upper().startswith("MNI"):
        return
    s_code = int(img.header["sform_code"])
    q_code = int(img.header["qform_code"])
    if s_code in MNI_CODES or q_code in MNI_CODES:
        return
    raise PreprocessError(
        f"{path}: looks like native (scanner) space (sform_code={s_code}, qform_code={q_code}, no "
        "space-MNI… in the name); expected an image normalised to MNI space (e.g. fMRIPrep "
        "--output-spaces MNI152NLin2009cAsym). If it is in MNI space, pass assume_mni=True / "
        "--assume-mni"
    )
