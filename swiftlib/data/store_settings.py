"""One store, one set of settings: what a rerun of preprocessing into an existing store may do.

Every setting that changes the stored values (grid, voxel size, normalisation, brain mask,
layout, template, TR override, target TR, denoising) is written to
``STORE/preprocess_settings.json`` before the first subject. A rerun with the same settings
continues (finished subjects are skipped); a rerun with other settings is refused with each
difference named, old → new, before anything is written — or, with ``overwrite=True``, the
store's files are deleted and it starts again. Stores written before this file existed are
checked through their manifest (finished) or their first subject file (interrupted).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from swiftlib.data.inputs import PreprocessError
from swiftlib.data.layouts import DEFAULT_LAYOUT
from swiftlib.utils.io import atomic_write_json, read_json

__all__ = ["SETTINGS_FILE", "SETTING_FLAGS", "check_settings", "record_settings", "clear_store"]

SETTINGS_FILE = "preprocess_settings.json"
#: setting → the command-line flag that sets it (named in the fix).
SETTING_FLAGS = {
    "grid": "--grid",
    "voxel_size": "--voxel-size",
    "normalisation": "--normalisation",
    "mask": "--mask",
    "layout": "--layout",
    "template": "--template",
    "tr": "--tr",
    "target_tr": "--target-tr",
    "denoise": "--denoise",
}
# files and folders of a store that --overwrite removes (reports/ keeps the run history)
_STORE_PATHS = (
    "subjects",
    ".progress.jsonl",
    "manifest.json",
    "subjects.csv",
    "qc.tsv",
    SETTINGS_FILE,
)


def _flag_value(value) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def check_settings(out: Path, want: dict) -> None:
    """Raise :class:`PreprocessError` naming every setting of ``want`` that differs from the
    store at ``out`` (old → new) and the fix; return when there is no store or they agree."""
    have = existing_settings(out)
    if not have:
        return
    diffs = [k for k in want if k in have and have[k] != want[k]]
    if not diffs:
        return
    listed = "; ".join(
        f"existing store has {k}={have[k]!r} but this run asks for {want[k]!r}" for k in diffs
    )
    same = " ".join(f"{SETTING_FLAGS[k]} {_flag_value(have[k])}" for k in diffs)
    n_done = len(list((out / "subjects").glob("*.h5"))) if (out / "subjects").is_dir() else 0
    raise PreprocessError(
        f"{out}: {listed}. A store holds one setting of each, so its {n_done} written subject(s) "
        f"and this run cannot be mixed. To continue it, rerun with the store's settings ({same}); "
        "to keep both, write to a new --out; to discard it and start again with the new "
        "settings, pass --overwrite (overwrite=True)"
    )


def record_settings(out: Path, want: dict) -> None:
    """Write the store's settings (before its first subject)."""
    atomic_write_json(out / SETTINGS_FILE, want)


def clear_store(out: Path) -> list[str]:
    """Delete a store's own files (subjects, journal, manifest, tables, settings); other files
    in ``out`` and the report history are left alone. Returns what was removed."""
    removed = []
    for name in _STORE_PATHS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def existing_settings(out: Path) -> dict | None:
    """The settings an existing store was written with (those it records), or None."""
    out = Path(out)
    have: dict = {}
    settings = out / SETTINGS_FILE
    manifest = out / "manifest.json"
    written = sorted((out / "subjects").glob("*.h5")) if (out / "subjects").is_dir() else []
    if manifest.exists():
        man = read_json(manifest)
        cfg = man.get("dataset_info", {}).get("config", {})
        # the config holds what was asked ("auto" template); the manifest what was found
        have.update({k: cfg[k] for k in SETTING_FLAGS if k in cfg and k != "template"})
        have.update({k: man[k] for k in ("grid", "voxel_size", "normalisation") if k in man})
        if "template" in man:
            have["template"] = man["template"]
        have["layout"] = man.get("layout", DEFAULT_LAYOUT)
    elif written:
        import h5py

        with h5py.File(written[0], "r") as f:
            geom = json.loads(f.attrs["geometry"])
            have.update(
                grid=list(geom["grid"]),
                voxel_size=float(geom["voxel_size"]),
                normalisation=str(f.attrs["normalisation"]),
                layout=str(f.attrs.get("layout", DEFAULT_LAYOUT)),
            )
            if "template" in f.attrs:
                have["template"] = str(f.attrs["template"])
    if settings.exists() and (written or manifest.exists()):
        have = {**read_json(settings), **have}
    return have or None
