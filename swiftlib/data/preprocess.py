"""Preprocessing: 4D NIfTI / BIDS-fMRIPrep derivatives (MNI space) → a subject store.

Per image: load and validate (4D, finite, enough frames, a plausible TR — sidecar over
header —, MNI space, the template it is in) → reorient into the layout's voxel order (RAS+
for ``mni_ras``, LAS for ``swift_v1``; :mod:`swiftlib.data.layouts`) → put on the store grid
(integer crop/pad when the image already lies on its lattice, nilearn resampling otherwise)
→ brain mask → optional denoising with fMRIPrep's confounds (:mod:`swiftlib.data.denoise`)
and resampling to a target TR (:mod:`swiftlib.data.temporal`) → normalisation (SwiFT
default: global z-score over in-brain voxels and time, background filled with the in-brain
minimum) → fp16 HDF5 through :class:`~swiftlib.data.store.StoreWriter`. The array steps live
in :mod:`swiftlib.data.transform`; this module drives them over a cohort.

Subjects run in parallel processes with a progress bar; completed subjects (journal +
checksum) are skipped on a rerun; one subject's failure is reported, never fatal to the
others, and leaves no partial file. A store keeps one set of settings
(:mod:`swiftlib.data.store_settings`): a rerun with other settings is refused before anything
is written, naming each difference. Every run leaves its own report under ``reports/`` and a
per-scan QC table (``qc.tsv``, :mod:`swiftlib.data.qc`); Ctrl-C writes the report and stops.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from swiftlib.data.denoise import DENOISE_STRATEGIES
from swiftlib.data.inputs import (
    TR_RANGE_S,
    PreprocessError,
    ScanInput,
    discover_inputs,
    load_bold,
    load_scan,
    read_template,
)
from swiftlib.data.layouts import DEFAULT_LAYOUT, KNOWN_TEMPLATES, get_layout
from swiftlib.data.store import NORM_METHODS, StoreError, StoreWriter
from swiftlib.data.transform import normalise, prepare_subject, zscore_swift_v1
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
    ``target_tr``: resample every scan in time to this TR (seconds); ``denoise``: regress
    fMRIPrep confounds out with nilearn's strategy of this name; ``task``/``session``/``run``:
    keep only BIDS scans with these entities.
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
    target_tr: float | None = None  # seconds; resample time to this TR (temporal.py)
    denoise: str | None = None  # None | "simple" | "scrubbing" | "compcor" (denoise.py)
    task: str | None = None  # keep only BIDS task-<task> scans
    session: str | None = None  # keep only BIDS ses-<session> scans
    run: str | None = None  # keep only BIDS run-<run> scans

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
        if self.target_tr is not None and not (TR_RANGE_S[0] <= self.target_tr <= TR_RANGE_S[1]):
            raise PreprocessError(
                f"target_tr={self.target_tr}: expected seconds in {TR_RANGE_S} (or None to keep "
                "each scan's TR)"
            )
        self.denoise = self.denoise or None
        if self.denoise is not None:
            try:
                check_choice("denoise", self.denoise, DENOISE_STRATEGIES)
            except ValueError as e:
                raise PreprocessError(str(e)) from None
        if self.denoise == "scrubbing" and self.target_tr is not None:
            raise PreprocessError(
                "denoise='scrubbing' with target_tr: scrubbing removes frames from the middle of "
                "a run, so the frames left are not evenly spaced and cannot be resampled to a "
                "target TR; use denoise='simple' or 'compcor' with target_tr, or drop target_tr"
            )
        for key in ("task", "session", "run"):
            value = getattr(self, key)
            setattr(self, key, None if value in (None, "") else str(value))
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
    warnings: list[str] = field(default_factory=list)  # each names the file(s)
    interrupted: bool = False  # Ctrl-C: the finished subjects are kept; rerun to resume
    config: dict = field(default_factory=dict)
    started: str = ""  # ISO time
    finished: str = ""
    history: str = ""  # this run's own report under STORE/reports/

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return asdict(self)


# -- the driver ---------------------------------------------------------------------------
def _process_one(scan: ScanInput, root: str, cfg: PreprocessConfig) -> dict:
    """One scan → one store subject. Returns ``{"subject_id", "error", "warnings", "qc"}``;
    every failure is caught here so one bad file never stops the cohort."""
    result = {"subject_id": scan.subject_id, "error": None, "warnings": [], "qc": None}
    try:
        result["qc"], result["warnings"] = _process_scan(scan, root, cfg)
    except (PreprocessError, StoreError) as e:
        result["error"] = str(e)
    except MemoryError:
        result["error"] = f"{scan.path}: out of memory; use fewer n_jobs"
    except OSError as e:
        import errno

        if e.errno == errno.ENOSPC:
            result["error"] = (
                f"{scan.path}: no space left on the device holding the store {root} ({e}); "
                "free space or write the store elsewhere (--out), then rerun to resume"
            )
        else:
            result["error"] = f"{scan.path}: {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - an unforeseen failure of one file, reported by name
        result["error"] = f"{scan.path}: unexpected {type(e).__name__}: {e}"
    return result


def _process_scan(scan: ScanInput, root: str, cfg: PreprocessConfig):
    from swiftlib.data.denoise import find_confounds, load_strategy, mean_fd
    from swiftlib.data.qc import COVERAGE_WARN_BELOW, mni_coverage

    layout = get_layout(cfg.layout)
    warnings = []
    confounds, tsv = None, find_confounds(scan.path)
    if cfg.denoise is not None:  # before loading the image: a missing table fails fast
        table, sample_mask, tsv = load_strategy(scan.path, cfg.denoise)
        confounds = (table, sample_mask)
    data, affine, tr, file_axcodes = load_scan(
        scan.path, scan.sidecar, cfg.tr, cfg.min_frames, cfg.assume_mni, layout.axcodes, raw=True
    )
    if file_axcodes != layout.axcodes:
        log.info(
            "%s: %s voxel order reoriented to %s (layout %s)",
            scan.path,
            file_axcodes,
            layout.axcodes,
            layout.name,
        )
    frames_source = int(data.shape[3])
    bold, mask, geom, stats = prepare_subject(
        data,
        affine,
        cfg,
        name=scan.path,
        source_axcodes=file_axcodes,
        tr=tr,
        confounds=confounds,
        dtype=np.float16,  # what the store keeps: no float32 grid is made
    )
    del data
    tr_store = float(cfg.target_tr) if cfg.target_tr is not None else tr
    coverage = mni_coverage(mask, geom.affine_array)
    if coverage < COVERAGE_WARN_BELOW:
        warnings.append(
            f"{scan.path}: covers {coverage:.1%} of the MNI brain mask (brain mask on the store "
            f"grid); expected ≥ {COVERAGE_WARN_BELOW:.0%} for a whole-brain scan — a partial "
            "field of view or a registration problem? Check it before training on it"
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
    writer.write_subject(scan.subject_id, bold, mask, geom, tr_store, stats, source=scan.path)
    qc = {
        "subject_id": scan.subject_id,
        "participant_id": scan.participant_id,
        "source": scan.path,
        "frames_source": frames_source,
        "tr_source": tr,
        "frames": int(bold.shape[3]),
        "tr": tr_store,
        "frames_censored": len(stats.get("denoise", {}).get("censored_frames", [])),
        "mean_fd": mean_fd(tsv),
        "coverage": round(coverage, 4),
        "denoise": cfg.denoise or "",
    }
    return qc, warnings


def _ignore_sigint() -> None:
    """Worker processes leave Ctrl-C to the parent, which stops handing out subjects and
    lets the running ones finish their (atomic) writes — no traceback from every worker."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _now() -> str:
    import datetime

    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _participant_tr_warnings(scans: list[ScanInput], cfg: PreprocessConfig) -> list[str]:
    """Read each scan's TR from its header/sidecar (no voxels); warn on header/sidecar
    disagreement and, without ``target_tr``, on runs of one participant at different TRs."""
    from swiftlib.data.inputs import scan_tr

    warnings, by_participant = [], {}
    for s in scans:
        try:
            tr, warning = scan_tr(s.path, s.sidecar, cfg.tr)
        except PreprocessError:
            continue  # the scan's own processing reports it
        if warning:
            warnings.append(warning)
        by_participant.setdefault(s.participant_id, []).append((s.path, tr))
    if cfg.target_tr is None:
        for participant, runs in sorted(by_participant.items()):
            trs = sorted({round(tr, 6) for _, tr in runs})
            if len(trs) > 1:
                listed = ", ".join(f"{Path(p).name} (TR {tr:g} s)" for p, tr in runs)
                warnings.append(
                    f"{participant}: runs at different TRs {trs} s — {listed}; a window of N "
                    "frames then spans different durations in one participant. Pass --target-tr "
                    "SECONDS (target_tr=) to resample them to one TR, or --task/--session/--run "
                    "to keep runs of one TR"
                )
    return warnings


def preprocess(
    input_path,
    out,
    phenotype=None,
    dataset: str = "custom",
    config: PreprocessConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PreprocessReport:
    """Preprocess every image under ``input_path`` into the store ``out``. Resumable.

    Returns a :class:`PreprocessReport`, written to ``out/reports/preprocess-<time>.json``
    (one per run, never overwritten) and ``out/preprocess_report.json`` (the latest); failed
    subjects are listed with their reason while the others are stored, and ``out/qc.tsv``
    gets one row per scan (:mod:`swiftlib.data.qc`). An existing store written with other
    settings is refused (:mod:`swiftlib.data.store_settings`) unless ``overwrite``, which
    deletes it first. Ctrl-C (``KeyboardInterrupt``) writes the report with
    ``interrupted: true`` and re-raises; finished subjects are kept for a rerun.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from swiftlib.data.qc import write_qc
    from swiftlib.data.registry import get_dataset
    from swiftlib.data.store_settings import (
        check_settings,
        clear_store,
        existing_settings,
        record_settings,
    )

    cfg = config or PreprocessConfig()
    out = Path(out)
    started = _now()
    scans = discover_inputs(
        input_path, template=cfg.template, task=cfg.task, session=cfg.session, run=cfg.run
    )
    template = scans[0].template  # one per store (discover_inputs refuses several)
    adapter = get_dataset(dataset)
    settings = _settings(cfg, template)
    if overwrite and existing_settings(out):
        removed = clear_store(out)
        log.warning("%s: --overwrite: removed the existing store (%s)", out, ", ".join(removed))
    check_settings(out, settings)
    report = PreprocessReport(store=str(out), config=_cfg_dict(cfg), started=started)
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
    record_settings(out, settings)
    qc_rows: list[dict] = []
    try:
        done = writer.completed(verify=True)
        todo = [s for s in scans if s.subject_id not in done]
        report.skipped = sorted(s.subject_id for s in scans if s.subject_id in done)
        report.warnings.extend(_participant_tr_warnings(scans, cfg))
        _run_all(todo, out, cfg, report, qc_rows, progress, tqdm)
    except KeyboardInterrupt:
        report.interrupted = True
        _finish(out, report, qc_rows, writer.completed(verify=False), write_qc)
        log.debug(  # the command line prints the one-line message; the report says it too
            "preprocess interrupted: %d subject(s) written are kept; rerun the same command to "
            "resume",
            len(report.written),
        )
        raise
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
    if records:
        writer.finalize(
            pd.DataFrame(rows),
            labels=labels,
            dataset_info={"adapter": adapter.name, "config": _cfg_dict(cfg)},
            records=records,
        )
    _finish(out, report, qc_rows, records, write_qc)
    for sid, reason in report.failed.items():
        log.error("failed %s: %s", sid, reason)
    log.info(
        "preprocess: %d written, %d skipped (already done), %d failed, %d warning(s) -> %s",
        len(report.written),
        len(report.skipped),
        len(report.failed),
        len(report.warnings),
        out,
    )
    return report


def _run_all(todo, out: Path, cfg: PreprocessConfig, report, qc_rows, progress, tqdm) -> None:
    if not todo:
        return
    bar = tqdm(total=len(todo), desc="preprocess", unit="subject", disable=not progress)
    try:
        if cfg.n_jobs == 1:
            for s in todo:
                _record(report, _process_one(s, str(out), cfg), qc_rows)
                bar.update()
        else:
            pool = ProcessPoolExecutor(max_workers=cfg.n_jobs, initializer=_ignore_sigint)
            try:
                futs = [pool.submit(_process_one, s, str(out), cfg) for s in todo]
                for fut in as_completed(futs):
                    _record(report, fut.result(), qc_rows)
                    bar.update()
            finally:  # on Ctrl-C: hand out nothing more; running subjects finish atomically
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def _finish(out: Path, report: PreprocessReport, qc_rows, records, write_qc) -> None:
    """QC table and this run's report (history + latest), both written atomically."""
    report.written.sort()
    if records:
        write_qc(out, qc_rows, keep=set(records))
    report.finished = _now()
    reports = out / "reports"
    stamp = report.started.replace(":", "").replace("-", "")[:15]
    name, k = f"preprocess-{stamp}.json", 1
    while (reports / name).exists():  # two runs in one second: never overwrite a report
        name, k = f"preprocess-{stamp}-{k}.json", k + 1
    report.history = f"reports/{name}"
    atomic_write_json(reports / name, report.to_dict())
    atomic_write_json(out / "preprocess_report.json", report.to_dict())


def _record(report: PreprocessReport, result: dict, qc_rows: list) -> None:
    sid = result["subject_id"]
    for w in result["warnings"]:
        log.warning("%s", w)
        report.warnings.append(w)
    if result["error"] is None:
        report.written.append(sid)
        qc_rows.append(result["qc"])
    else:
        report.failed[sid] = result["error"]


def _settings(cfg: PreprocessConfig, template: str) -> dict:
    """What a store's values depend on (one store, one set: store_settings.py)."""
    return {
        "grid": list(cfg.grid),
        "voxel_size": cfg.voxel_size,
        "normalisation": cfg.normalisation,
        "mask": cfg.mask,
        "layout": cfg.layout,
        "template": template,
        "tr": cfg.tr,
        "target_tr": cfg.target_tr,
        "denoise": cfg.denoise,
    }


def _cfg_dict(cfg: PreprocessConfig) -> dict:
    d = asdict(cfg)
    d["grid"] = list(cfg.grid)
    return d
