"""The ``swiftlib`` command line: ``swiftlib <command> --help`` for each command."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

log = logging.getLogger("swiftlib")


def _cmd_synth(args) -> int:
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    cfg = SyntheticConfig(
        num_subjects=args.subjects,
        seed=args.seed,
        voxel_size=args.voxel_size,
        grid=tuple(args.grid) if args.grid else None,
        num_frames=args.frames,
        tr=args.tr,
        num_sites=args.sites,
    )
    store = make_synthetic_cohort(
        args.out,
        config=cfg,
        export_nifti=args.export_nifti,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    _print_json(store.summary())
    if args.export_nifti:
        print(f"NIfTI export (BIDS-derivatives-like): {args.export_nifti}")
    return 0


def _cmd_preprocess(args) -> int:
    from swiftlib.data.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig(
        voxel_size=args.voxel_size,
        grid=tuple(args.grid),
        normalisation=args.normalisation,
        mask=args.mask,
        min_frames=args.min_frames,
        tr=args.tr,
        assume_mni=args.assume_mni,
        n_jobs=args.jobs,
        layout=args.layout,
        template=args.template,
        target_tr=args.target_tr,
        denoise=args.denoise,
        task=args.task,
        session=args.session,
        run=args.run,
    )
    try:
        report = preprocess(
            args.input,
            args.out,
            phenotype=args.phenotype,
            dataset=args.dataset,
            config=cfg,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    except KeyboardInterrupt:  # Ctrl-C: one line, finished subjects kept, rc 130 (128 + SIGINT)
        print(
            f"swiftlib preprocess: interrupted; the subjects finished so far are kept in "
            f"{args.out} — rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(f"store: {report.store}")
    print(
        f"written {len(report.written)}, skipped (already done) {len(report.skipped)}, failed "
        f"{len(report.failed)}, warnings {len(report.warnings)} (report: {report.history})"
    )
    for warning in report.warnings:
        print(f"  WARNING {warning}", file=sys.stderr)
    for sid, reason in report.failed.items():
        print(f"  FAILED {sid}: {reason}", file=sys.stderr)
    if report.written or report.skipped:
        from swiftlib.data.store import open_store

        _print_json(open_store(args.out).summary())
    return 0 if report.ok else 1


def _cmd_info(args) -> int:
    from swiftlib.info import describe

    text = json.dumps(
        describe(args.path, verify=args.verify, full=args.full), indent=2, default=str
    )
    # lists of numbers or strings on one line ("grid": [96, 96, 96]): the summary fits a screen
    print(
        re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m[1]) + "]", text)
    )
    return 0


def _cmd_demo(args) -> int:
    from swiftlib.demo import DemoError, format_summary, run_demo

    def announce(i, n, stage):
        print(f"[{i}/{n}] {stage.name}: {stage.notebook}", flush=True)

    try:
        stages = run_demo(
            args.out,
            runs_dir=args.runs_dir,
            num_subjects=args.subjects,
            seed=args.seed,
            progress=not args.quiet,
            log_output=args.stream,
            on_stage=announce,
            skip=args.skip,
        )
    except DemoError as e:
        print("\nswiftlib demo — summary (FAILED)")
        print(format_summary(e.stages))
        print(f"\nswiftlib demo: {e}", file=sys.stderr)
        return 1
    print("\nswiftlib demo — summary")
    print(format_summary(stages))
    return 0


def _cmd_run(args) -> int:
    from swiftlib.runner import format_parameters, notebook_parameters, run_notebook

    if args.list_params:
        print(f"parameters of {args.notebook}:")
        print(format_parameters(notebook_parameters(args.notebook)))
        return 0
    if args.out is not None:  # a typed path: typos and unexpanded variables fail here
        from swiftlib.rundir import check_run_dir_path

        check_run_dir_path(args.out, "-o", require_parent=True)
    out = run_notebook(
        args.notebook,
        run_dir=args.out,
        overwrite=args.overwrite,
        params_file=args.params_file,
        cli_values=args.param,
        cell_timeout=args.cell_timeout or None,
        kernel_name=args.kernel,
        log_output=not args.quiet,
        progress=not args.quiet,
        html=not args.no_html,
    )
    print(f"run dir:  {out.run_dir}")
    print(f"notebook: {out.executed}")
    if out.html:
        print(f"html:     {out.html}")
    if out.figures:
        print(f"figures:  {out.figures[0].parent} ({len(out.figures)})")
    if out.results_path:
        print(f"results:  {out.results_path}")
    if out.status != "ok":
        print(f"\nswiftlib run: {args.notebook} FAILED after {out.seconds:.1f} s", file=sys.stderr)
        if out.failed_cell is not None:
            print(
                f"failing cell: {out.failed_cell} (index in the executed notebook)", file=sys.stderr
            )
        if out.failed_source:
            print(
                "\n".join("    " + line for line in out.failed_source.splitlines()[:15]),
                file=sys.stderr,
            )
        if out.traceback:
            print("\n".join(out.traceback.splitlines()[-25:]), file=sys.stderr)
        print(f"error: {out.error}", file=sys.stderr)
        if out.executed.exists():
            print(f"partial executed notebook kept: {out.executed}", file=sys.stderr)
        return 1
    metrics = out.results.get("metrics", {})
    if metrics:
        print(
            "metrics:  "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in list(metrics.items())[:12]
            )
        )
    print(f"ok in {out.seconds:.1f} s")
    return 0


_SBATCH_OPTS = (
    "nodes",
    "gpus_per_node",
    "ntasks_per_node",
    "cpus_per_task",
    "time",
    "account",
    "qos",
    "constraint",
    "job_name",
    "array",
    "output",
)


def _slurm_args(args) -> dict:
    sbatch = {k: getattr(args, k) for k in _SBATCH_OPTS if getattr(args, k) is not None}
    variables = {
        name: getattr(args, attr)
        for name, attr in (("SWIFTLIB_ENV", "env"), ("SWIFTLIB_MODULES", "modules"))
        if getattr(args, attr) is not None
    }
    return dict(
        params_file=args.params_file,
        run_dir=args.out,
        sbatch=sbatch,
        variables=variables,
        template=args.template,
        after=args.after,
    )


def _cmd_slurm(args) -> int:
    from swiftlib import slurm

    if args.slurm_command == "render":
        print(slurm.render(args.notebook, **_slurm_args(args)), end="")
        return 0
    try:
        sub = slurm.submit(args.notebook, sbatch_cmd=args.sbatch, **_slurm_args(args))
    except slurm.SlurmError as e:
        print(f"swiftlib slurm submit: error: {e}", file=sys.stderr)
        return 1
    if args.parsable:  # the job id alone, for chains: PRE=$(swiftlib slurm submit … --parsable)
        print(sub.job_id)
        return 0
    print(f"job id:  {sub.job_id}")
    print(f"run dir: {sub.run_dir}")
    print(f"script:  {sub.script}")
    return 0


def _cmd_embed(args) -> int:
    from swiftlib.interpret import embeddings as emb

    df = emb.extract_embeddings(
        args.checkpoint,
        args.store,
        split=None if args.subjects else args.split,
        subjects=args.subjects,
        level=args.level,
        out_path=args.out,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        splits_file=args.splits_file,
        progress=not args.quiet,
    )
    summary = {"rows": len(df), "out": str(args.out)}
    if args.diagnostics:
        summary["metrics"] = emb.diagnostics_metrics(
            emb.probe_scores(df), emb.site_leakage(df), split=args.split
        )
    _print_json(summary)
    return 0


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def build_parser() -> argparse.ArgumentParser:
    from swiftlib import __version__

    p = argparse.ArgumentParser(
        prog="swiftlib", description="SwiFT v2 research environment: 4D fMRI transformers."
    )
    p.add_argument("--version", action="version", version=f"swiftlib {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "synth",
        help="generate the synthetic cohort (planted sex/age/null signals) as a store",
        description="Generate the synthetic cohort into a store (deterministic by seed).",
    )
    s.add_argument("out", type=Path, help="store directory to create")
    s.add_argument("--subjects", type=int, default=40, help="number of subjects (default 40)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument(
        "--voxel-size",
        type=float,
        default=4.0,
        help="mm; 4 = CPU default (48³), 2 = real SwiFT 96³",
    )
    s.add_argument(
        "--grid",
        type=int,
        nargs=3,
        metavar=("D", "H", "W"),
        help="store grid (default from voxel size)",
    )
    s.add_argument("--frames", type=int, default=60, help="frames per scan (default 60)")
    s.add_argument("--tr", type=float, default=0.8, help="repetition time in seconds (default 0.8)")
    s.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    s.add_argument(
        "--export-nifti", type=Path, help="also write raw scans as BIDS-derivatives NIfTI here"
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="make the store again when it holds a cohort of other settings (else refused)",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser(
        "preprocess",
        help="4D NIfTI / BIDS derivatives (MNI) → a subject store",
        description="Preprocess MNI-space 4D fMRI into a store; resumable, parallel.",
    )
    s.add_argument(
        "input", type=Path, help="a 4D NIfTI, a folder of them, or a BIDS derivatives folder"
    )
    s.add_argument(
        "--out", type=Path, required=True, help="store directory (created; reruns resume)"
    )
    s.add_argument(
        "--phenotype", type=Path, help="phenotype table (CSV/TSV) with subject ids and labels"
    )
    s.add_argument(
        "--dataset",
        default="custom",
        help="dataset adapter (see swiftlib.data.registry; default custom)",
    )
    s.add_argument(
        "--voxel-size", type=float, default=2.0, help="store voxel size in mm (default 2)"
    )
    s.add_argument(
        "--grid",
        type=int,
        nargs=3,
        default=[96, 96, 96],
        metavar=("D", "H", "W"),
        help="store grid (default 96 96 96)",
    )
    s.add_argument(
        "--normalisation",
        default="zscore_global",
        choices=["zscore_global", "zscore_voxel", "psc", "none"],
    )
    s.add_argument(
        "--mask", default="auto", help="auto | mni | path to a mask NIfTI (default auto)"
    )
    s.add_argument(
        "--min-frames", type=int, default=20, help="refuse scans shorter than this (default 20)"
    )
    s.add_argument("--tr", type=float, help="TR in seconds (overrides header and sidecar)")
    s.add_argument("--assume-mni", action="store_true", help="skip the MNI-space check")
    s.add_argument(
        "--layout",
        default="mni_ras",
        help="store voxel convention: mni_ras (default: RAS+, grid centred on the MNI brain) or "
        "swift_v1 (SwiFT v1's exact input, for its checkpoints: LAS, 96³ at 2 mm)",
    )
    s.add_argument(
        "--template",
        default="auto",
        help="MNI template of the images: auto (default: the BIDS space- entity or the JSON "
        "sidecar) or a TemplateFlow name, e.g. MNI152NLin6Asym (chooses that space's files "
        "and declares it for files that do not say)",
    )
    s.add_argument(
        "--target-tr",
        type=float,
        help="resample every scan in time to this TR in seconds (anti-aliased polyphase "
        "filter, scipy.signal.resample_poly); default: keep each scan's TR",
    )
    s.add_argument(
        "--denoise",
        choices=["simple", "scrubbing", "compcor"],
        help="regress fMRIPrep confounds (desc-confounds_timeseries.tsv) out with nilearn's "
        "strategy of this name before normalisation; default: no denoising",
    )
    s.add_argument("--task", help="keep only BIDS task-<TASK> scans (e.g. rest)")
    s.add_argument("--session", help="keep only BIDS ses-<SESSION> scans")
    s.add_argument("--run", help="keep only BIDS run-<RUN> scans")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an existing store in --out first (needed to change its settings)",
    )
    s.add_argument("-j", "--jobs", type=int, default=1, help="parallel processes (default 1)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_preprocess)

    s = sub.add_parser(
        "info",
        help="describe a store, a checkpoint or a run directory",
        description=(
            "Print a JSON summary of a store, a checkpoint (.ckpt/.pt) or a run (results.json)."
        ),
    )
    s.add_argument("path", type=Path)
    s.add_argument(
        "--verify",
        choices=["size", "checksum", "none"],
        default="size",
        help="store check (default size)",
    )
    s.add_argument(
        "--full",
        action="store_true",
        help="a checkpoint's every field (hyper-parameters, RNG state, …), not its summary",
    )
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser(
        "run",
        help="run a notebook headless (papermill) with checked parameters",
        description="Execute NOTEBOOK with papermill into RUN_DIR (executed notebook, HTML, "
        "results.json). Unknown or ill-typed parameters are refused before running.",
    )
    s.add_argument(
        "notebook",
        type=Path,
        help="a notebook, e.g. notebooks/02_pretrain/01_pretrain_simmim.ipynb",
    )
    s.add_argument(
        "-f", "--params-file", type=Path, help="YAML parameters (flat, or one section per notebook)"
    )
    s.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="set a parameter (VALUE parsed as YAML unless the parameter is a string); repeatable",
    )
    s.add_argument(
        "-o",
        "--out",
        type=Path,
        help="run directory (default papermill_runs/<stage>/<time>-<notebook>/)",
    )
    s.add_argument(
        "--cell-timeout", type=int, default=0, help="seconds per cell, 0 = none (default 0)"
    )
    s.add_argument(
        "-k", "--kernel", default="python3", help="Jupyter kernel (default python3; see kernel)"
    )
    s.add_argument("--no-html", action="store_true", help="skip the HTML export")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in RUN_DIR (only once the new run succeeds)",
    )
    s.add_argument(
        "--list-params", action="store_true", help="print the notebook's parameters and exit"
    )
    s.add_argument(
        "-q", "--quiet", action="store_true", help="no cell output streaming, no progress bar"
    )
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser(
        "slurm",
        help="render or submit a SLURM job that runs a notebook (slurm/ templates)",
        description=(
            "Job scripts for Perlmutter from the slurm/ templates: srun swiftlib run NOTEBOOK."
        ),
    )
    ssub = s.add_subparsers(dest="slurm_command", metavar="render|submit", required=True)
    for name, text in (
        ("render", "print the job script"),
        ("submit", "write RUN_DIR/job.sbatch and sbatch it"),
    ):
        r = ssub.add_parser(name, help=text, description=text)
        r.add_argument("notebook", type=Path)
        r.add_argument(
            "-f", "--params-file", type=Path, help="YAML parameters (checked against the notebook)"
        )
        r.add_argument(
            "-o",
            "--out",
            type=Path,
            help="run directory (submit default: papermill_runs/<stage>/<time>-<nb>)",
        )
        r.add_argument(
            "--template", type=Path, help="sbatch template (default: by the notebook's stage)"
        )
        r.add_argument("--nodes", type=int)
        r.add_argument(
            "--gpus-per-node",
            type=int,
            help="GPUs per node (also tasks per node); 0 drops the directive",
        )
        r.add_argument("--ntasks-per-node", type=int)
        r.add_argument("--cpus-per-task", type=int)
        r.add_argument("--time", help="wall-clock limit, e.g. 02:00:00")
        r.add_argument("--account", help="NERSC project (e.g. m1234)")
        r.add_argument("--qos", help="regular | debug | premium | … ('' drops it)")
        r.add_argument("--constraint", help="node constraint (default gpu; '' drops it)")
        r.add_argument("--job-name")
        r.add_argument("--array", help="job array range (Optuna workers), e.g. 0-15")
        r.add_argument("--output", help="SLURM log file pattern")
        r.add_argument(
            "--env", help="conda environment to activate ('' for the calling environment)"
        )
        r.add_argument("--modules", help="modules to load ('' for none)")
        r.add_argument(
            "--after",
            nargs="+",
            default=[],
            metavar="JOBID",
            help="start only after these jobs ended successfully (#SBATCH --dependency=afterok)",
        )
        if name == "submit":
            r.add_argument("--sbatch", default="sbatch", help="sbatch command (default sbatch)")
            r.add_argument("--parsable", action="store_true", help="print the job id only")
    s.set_defaults(func=_cmd_slurm)

    s = sub.add_parser(
        "demo",
        help="run the whole pipeline on the synthetic cohort and print a summary",
        description="Run every pipeline stage headless on the synthetic cohort.",
    )
    s.add_argument(
        "--out", type=Path, default=Path("data/demo"), help="data folder (default data/demo)"
    )
    s.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("papermill_runs/demo"),
        help="executed notebooks, checkpoints and results.json (default papermill_runs/demo)",
    )
    s.add_argument(
        "--subjects", type=int, default=None, help="synthetic subjects (default: the preset's, 136)"
    )
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--stream", action="store_true", help="stream every cell's output to the log")
    s.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=["tune", "fewshot"],
        metavar="STAGE",
        help="leave out stages nothing later needs: tune (a small Optuna study), fewshot "
        "(few-shot curves, pretrained vs scratch)",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser(
        "embed",
        help="embeddings of a checkpoint's encoder for a store's subjects → parquet",
        description=(
            "Extract subject- or window-level embeddings (resumable; see docs/interpret.md)."
        ),
    )
    s.add_argument(
        "checkpoint", type=Path, help="a fine-tuning or SimMIM checkpoint (checkpoints/best.ckpt)"
    )
    s.add_argument("store", type=Path, help="a store satisfying the checkpoint's contract")
    s.add_argument(
        "--out", type=Path, required=True, help="parquet file (a rerun resumes from <out>.parts/)"
    )
    s.add_argument(
        "--split",
        default="all",
        choices=["train", "val", "test", "all"],
        help="subjects (default all)",
    )
    s.add_argument("--subjects", nargs="+", help="explicit subject ids instead of --split")
    s.add_argument("--splits-file", type=Path, help="split file (default: the checkpoint run's)")
    s.add_argument(
        "--level", default="subject", choices=["subject", "window"], help="rows (default subject)"
    )
    s.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    s.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="default fp32")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    s.add_argument(
        "--diagnostics", action="store_true", help="also print probe and site-leakage scores"
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_embed)

    from swiftlib.kernel import add_subparser as add_kernel_subparser

    add_kernel_subparser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from swiftlib.data.preprocess import PreprocessError
    from swiftlib.data.store import StoreError

    try:
        return int(args.func(args) or 0)
    except (PreprocessError, StoreError, FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"swiftlib {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
