"""``swiftlib run``: execute a notebook headless with papermill, parameters checked first.

papermill only *warns* about unknown parameters and injects any value as is; a typo in a
batch job then silently runs the defaults for hours. Here the notebook's ``parameters``
cell is read first (``papermill.inspect_notebook``) and every unknown name or ill-typed
value is refused, listing the valid parameters. Then the notebook runs with papermill
(cell outputs streamed to the log, a per-cell timeout, a progress bar), and the run
directory receives

- ``<notebook>.ipynb``: the executed notebook (kept, up to the failing cell, on failure),
- ``<notebook>.html``: an HTML export for viewing without Jupyter,
- ``results.json``: written by the notebook's final ``save_results``; the runner adds the
  resolved notebook parameters, the notebook path, the HTML path and the wall time, and
  marks it ``failed`` (with the error) when a cell fails.

Parameter files (``-f``, YAML) are flat ``name: value`` mappings, or have one section per
notebook, keyed by notebook file name without ``.ipynb`` (``01_pretrain_simmim:``), so one
preset file can drive a whole chain (``notebooks/params/*.yaml``).

When ``srun`` or ``torchrun`` started several ranks (each runs ``swiftlib run`` on the same
notebook and run directory, and the kernels form one DDP/DeepSpeed job), rank 0 keeps the
canonical notebook, HTML and results.json (with ``ranks.world_size``); rank r > 0 writes its
executed notebook and a ``status.json`` (status, error, seconds) to ``RUN_DIR/ranks/rank-<r>/``.
Each figure a cell displayed is also written to ``RUN_DIR/figures/`` (PNG, or standalone
HTML for plotly; :mod:`swiftlib.notebook_figures`).

A run directory is locked while a run is in it, a finished one (``results.json`` ``"ok"``)
is only run into again with ``overwrite`` (the rerun is staged in ``RUN_DIR/.rerun/`` and
replaces the finished run only when it succeeds), and an unfinished one (a crashed or requeued
run) is run into in place, where its checkpoints are resumed from: :mod:`swiftlib.rundir`.
A full disk ends the run as ``failed`` with ``out of space on <path>``.
``SIGUSR1`` (``sbatch --signal=SIGUSR1@90``) and ``SIGTERM`` are forwarded to the kernel,
where :class:`swiftlib.training.requeue.RequeueOnSignal` checkpoints at the next step boundary
and requeues the job (SLURM also signals the kernel itself: the callback acts once).
"""

from __future__ import annotations

import ast
import logging
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from swiftlib.rundir import (
    LOCK_NAME,
    RunDirError,
    RunDirFinished,
    RunDirLock,
    check_run_dir_path,
    is_finished,
    keep_failed_rerun,
    make_run_dir,
    out_of_space,
    out_of_space_message,
    prepare_staging,
    swap_in,
)
from swiftlib.utils.config import ConfigError, check_type
from swiftlib.utils.validation import did_you_mean

__all__ = [
    "NotebookParameter",
    "ParameterError",
    "NotebookRunError",
    "RunOutcome",
    "notebook_parameters",
    "format_parameters",
    "load_params_file",
    "coerce_value",
    "resolve_parameters",
    "notebook_kind",
    "default_run_dir",
    "launch_rank",
    "slurm_rank",
    "run_notebook",
    "export_html",
    "strip_outputs",
]

log = logging.getLogger(__name__)

#: Annotations a parameter may carry; anything else is accepted untyped (with a warning).
TYPES = ("int", "float", "str", "bool", "list", "dict")
#: results.json ``kind`` by stage folder, when the notebook's metadata does not say.
KIND_BY_STAGE = {
    "data": "data",
    "pretrain": "pretrain",
    "downstream": "finetune",
    "interpret": "embed",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ParameterError(ValueError):
    """Parameters do not fit the notebook (unknown name, wrong type, bad params file)."""


class NotebookRunError(RuntimeError):
    """A cell failed; ``outcome`` says which and where the partial notebook is."""

    def __init__(self, message: str, outcome: RunOutcome):
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class NotebookParameter:
    name: str
    type_name: str  # one of TYPES, or "" when unannotated
    default: Any
    help: str


@dataclass
class RunOutcome:
    notebook: Path
    run_dir: Path
    executed: Path
    status: str  # "ok" | "failed"
    parameters: dict = field(default_factory=dict)
    results_path: Path | None = None
    html: Path | None = None
    seconds: float = 0.0
    error: str | None = None
    failed_cell: int | None = None  # index of the failing cell in the notebook
    failed_source: str | None = None
    traceback: str | None = None
    figures: list = field(default_factory=list)  # files written to RUN_DIR/figures/

    @property
    def results(self) -> dict:
        from swiftlib.results import load_results

        if self.results_path is None or not self.results_path.exists():
            return {}
        return load_results(self.run_dir)


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


def notebook_parameters(notebook) -> dict[str, NotebookParameter]:
    """The notebook's parameters (name → :class:`NotebookParameter`), via papermill."""
    import papermill as pm

    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"notebook {str(path)!r} does not exist")
    pm_log = logging.getLogger("papermill")
    level = pm_log.level
    pm_log.setLevel(logging.WARNING)  # "Input Notebook: …" on every inspection
    try:
        info = pm.inspect_notebook(str(path))
    finally:
        pm_log.setLevel(level)
    out = {}
    for name, p in info.items():
        type_name = p.get("inferred_type_name") or ""
        type_name = "" if type_name in ("None", "NoneType") else type_name
        try:
            default = ast.literal_eval(p["default"])
        except (ValueError, SyntaxError):
            default = p["default"]
        out[name] = NotebookParameter(name, type_name, default, p.get("help") or "")
    return out


def format_parameters(params: dict[str, NotebookParameter]) -> str:
    """A table of the parameters: name, type, default, help."""
    rows = [(p.name, p.type_name or "any", repr(p.default), p.help) for p in params.values()]
    w0 = max([len(r[0]) for r in rows] + [4])
    w1 = max([len(r[1]) for r in rows] + [4])
    w2 = min(40, max([len(r[2]) for r in rows] + [7]))
    return "\n".join(
        f"  {a.ljust(w0)}  {b.ljust(w1)}  {c.ljust(w2)}  {d}".rstrip() for a, b, c, d in rows
    )


def load_params_file(path, notebook=None) -> dict:
    """Read a YAML parameter file: flat, or one section per notebook (keyed by file stem)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"parameter file {str(p)!r} does not exist")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParameterError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise ParameterError(
            f"{p}: expected a mapping of parameter names to values, got {type(doc).__name__}"
        )
    sections = [k for k in doc if isinstance(k, str) and re.match(r"^\d\d_", k)]
    if not sections:
        return doc
    if len(sections) != len(doc):
        other = sorted(set(doc) - set(sections))
        raise ParameterError(
            f"{p}: mixes notebook sections ({sections}) with plain parameters "
            f"{other}; put every parameter inside a notebook section"
        )
    stem = Path(notebook).stem if notebook is not None else None
    if stem not in doc:
        raise ParameterError(
            f"{p} has sections for {sections} but not for notebook {stem!r}; "
            f"add a '{stem}:' section"
        )
    section = doc[stem] or {}
    if not isinstance(section, dict):
        raise ParameterError(
            f"{p}: section {stem!r} must be a mapping of parameter names to values"
        )
    return section


#: notebook parameter annotations → the types ``check_type`` checks
_PARAMETER_TYPES = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "list": list,
    "dict": dict,
}


def coerce_value(param: NotebookParameter, value: Any, from_text: bool = False) -> Any:
    """Check ``value`` against the parameter's type; ``from_text`` values (``-p KEY VALUE``)
    are parsed as YAML first unless the parameter is a string. Raises :class:`ParameterError`."""
    import yaml

    t = param.type_name
    if from_text and t != "str":
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
        if t == "float" and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
    tp = _PARAMETER_TYPES.get(t)
    if tp is None:  # an annotation the runner does not check
        return value
    try:  # the one type checker (configs, model overrides, notebook parameters)
        return check_type(value, tp, param.name)
    except ConfigError:
        raise ParameterError(
            f"{param.name}: expected {t} (default {param.default!r}), got "
            f"{type(value).__name__} {value!r}"
        ) from None


def resolve_parameters(
    notebook,
    file_values: dict | None = None,
    cli_values=(),
    values: dict | None = None,
    params: dict[str, NotebookParameter] | None = None,
) -> dict:
    """Validated overrides for ``notebook``: the params file, then ``values`` (typed), then
    ``cli_values`` (``[(name, text)]``, parsed). Every problem is reported at once."""
    params = params if params is not None else notebook_parameters(notebook)
    if not params:
        raise ParameterError(f"{notebook}: no cell tagged 'parameters'; nothing can be set")
    out, problems = {}, []
    items = [(k, v, False, "params file") for k, v in (file_values or {}).items()]
    items += [(k, v, False, "value") for k, v in (values or {}).items()]
    items += [(k, v, True, "-p") for k, v in cli_values]
    for name, value, from_text, source in items:
        if name not in params:
            problems.append(f"unknown parameter {name!r} ({source}){did_you_mean(name, params)}")
            continue
        try:
            out[name] = coerce_value(params[name], value, from_text=from_text)
        except ParameterError as e:
            problems.append(f"{e} ({source})")
    if problems:
        raise ParameterError(
            f"{Path(notebook).name}: "
            + "; ".join(problems)
            + f"\nvalid parameters of {Path(notebook).name}:\n"
            + format_parameters(params)
        )
    return out


# ---------------------------------------------------------------------------------------
# Run directories
# ---------------------------------------------------------------------------------------


def notebook_stage(notebook) -> str:
    """``notebooks/02_pretrain/x.ipynb`` → ``pretrain`` (the folder without its number)."""
    parent = Path(notebook).resolve().parent.name
    return re.sub(r"^\d+_", "", parent) or "run"


def notebook_kind(notebook, nb=None) -> str:
    """results.json ``kind``: ``metadata.swiftlib.kind`` of the notebook, else by stage folder."""
    import nbformat

    nb = nb if nb is not None else nbformat.read(str(notebook), as_version=4)
    kind = (nb.metadata.get("swiftlib") or {}).get("kind")
    return kind or KIND_BY_STAGE.get(notebook_stage(notebook), "data")


def default_run_dir(notebook, root="papermill_runs") -> Path:
    """``papermill_runs/<stage>/<YYYYmmdd-HHMMSS>-<notebook>/``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / notebook_stage(notebook) / f"{stamp}-{Path(notebook).stem}"


def launch_rank() -> tuple[int, int]:
    """``(rank, world)`` of this process in a job whose ranks were started from outside:
    ``torchrun`` (``RANK``/``WORLD_SIZE``; it sets them per worker, so they win inside an
    ``srun`` task too) or ``srun`` (``SLURM_PROCID``/``SLURM_NTASKS``); ``(0, 1)`` otherwise."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ:
            try:
                return int(os.environ[rank_var]), int(os.environ.get(world_var, 1))
            except ValueError:
                return 0, 1
    return 0, 1


def slurm_rank() -> tuple[int, int]:
    """Alias of :func:`launch_rank` (its name before torchrun launches were recognised)."""
    return launch_rank()


# ---------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------


def _relpath(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _failure(nb_path: Path, exc: BaseException) -> tuple[int | None, str | None, str, str]:
    """``(cell index, cell source, one-line error, traceback)`` of a failed execution."""
    import nbformat

    index = getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    tb = getattr(exc, "traceback", None)
    message = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    trace = _ANSI.sub("", "\n".join(tb) if isinstance(tb, list) else str(tb or ""))
    source = None
    try:  # the saved notebook is what the user opens: index and source from there
        nb = nbformat.read(str(nb_path), as_version=4)
        code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        hit = next(
            (
                i
                for i, c in code
                if any(o.get("output_type") == "error" for o in c.get("outputs", []))
            ),
            None,
        )
        if hit is None:  # e.g. a timeout: the cell left running
            hit = next(
                (
                    i
                    for i, c in code
                    if (c.get("metadata", {}).get("papermill", {}) or {}).get("status") == "running"
                ),
                None,
            )
        if hit is not None:
            index, source = hit, nb.cells[hit].source
    except Exception:  # noqa: BLE001 - the partial notebook may be unreadable; the error still stands
        pass
    return index, source, message.strip(), trace


class _ForwardSignals:
    """Forward SIGUSR1/SIGTERM received by this process to its child processes (the
    kernel), so Lightning's SLURM requeue handler inside the kernel sees them."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __enter__(self):
        self.previous = {}
        try:
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._forward)
        except ValueError:  # not in the main thread: nothing to forward
            pass
        return self

    def _forward(self, signum, frame):
        import psutil

        for child in psutil.Process().children(recursive=False):
            try:
                log.warning("forwarding signal %d to kernel pid %d", signum, child.pid)
                child.send_signal(signum)
            except psutil.Error:
                pass

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
        return False


def export_html(executed, out=None) -> Path:
    """HTML export of an executed notebook (nbconvert, lab template, images embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    out = Path(out) if out else executed.with_suffix(".html")
    quiet = logging.getLogger("traitlets")  # "alternative text is missing on N image(s)"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        nb = nbformat.read(str(executed), as_version=4)
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    finally:
        quiet.setLevel(level)
    from swiftlib.utils.io import atomic_write_text

    return atomic_write_text(out, body)  # a full disk leaves no truncated page


#: Cell metadata that a JupyterLab session or papermill adds and a committed notebook drops.
_SESSION_CELL_METADATA = (
    "papermill",
    "execution",
    "ExecuteTime",
    "collapsed",
    "scrolled",
    "trusted",
)


def strip_outputs(path) -> bool:
    """Remove outputs, execution counts and what a session adds (papermill and timing
    metadata, saved widget state, the kernel's version details) from a notebook in place;
    returns True when the file changed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        for key in _SESSION_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    if "language_info" in nb.metadata:
        nb.metadata["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + ("" if after.endswith("\n") else "\n"))
    return after != before


def _finish_results(
    run_dir: Path, notebook: Path, kind: str, parameters: dict, outcome: RunOutcome, world: int = 1
) -> Path:
    """Fill results.json with what only the runner knows; create it if the notebook did not."""
    from swiftlib.results import save_results
    from swiftlib.utils.io import atomic_write_json, read_json

    path = run_dir / "results.json"
    if path.exists():
        doc = read_json(path)
    else:
        if outcome.status == "ok":
            log.warning(
                "%s did not write results.json (no save_results at its end?); "
                "writing a minimal one",
                notebook,
            )
        save_results(
            run_dir,
            kind,
            status="failed" if outcome.status == "failed" else "ok",
            error=outcome.error,
        )
        doc = read_json(path)
    if doc.get("status") == "failed" and outcome.status == "ok":  # the notebook reported a failure
        outcome.status = "failed"
        outcome.error = doc.get("error") or "the notebook reported status 'failed'"
    notebook_config = doc.get("parameters") or {}
    doc["parameters"] = dict(parameters)
    if notebook_config and notebook_config != parameters:
        doc["config"] = notebook_config
    doc["notebook"] = _relpath(notebook)
    artifacts = doc.setdefault("artifacts", {})
    artifacts["executed_notebook"] = outcome.executed.name
    if outcome.html is not None:
        artifacts["html"] = outcome.html.name
    if outcome.figures:
        artifacts["figures"] = "figures"
    doc.setdefault("timings", {})["notebook_s"] = round(outcome.seconds, 3)
    if world > 1:  # the other ranks' notebooks and status files (see the module docstring)
        doc["ranks"] = {
            "world_size": world,
            "notebooks": f"ranks/rank-<r>/{outcome.executed.name}",
            "status": "ranks/rank-<r>/status.json",
        }
    if outcome.status == "failed":
        doc["status"] = "failed"
        cell = f"cell {outcome.failed_cell}: " if outcome.failed_cell is not None else ""
        doc["error"] = f"{cell}{outcome.error}"
    return atomic_write_json(path, doc)


def _rank_status(path: Path, rank: int, world: int, outcome: RunOutcome) -> Path:
    """``ranks/rank-<r>/status.json``: how this rank's notebook ended (rank 0 has results.json)."""
    from swiftlib.utils.io import atomic_write_json

    return atomic_write_json(
        path,
        {
            "rank": rank,
            "world_size": world,
            "host": socket.gethostname(),
            "status": outcome.status,
            "error": None
            if outcome.error is None
            else f"cell {outcome.failed_cell}: {outcome.error}",
            "notebook": outcome.executed.name,
            "seconds": round(outcome.seconds, 3),
        },
    )


def run_notebook(
    notebook,
    run_dir=None,
    parameters: dict | None = None,
    params_file=None,
    cli_values=(),
    cell_timeout: int | None = 3600,
    kernel_name: str = "python3",
    log_output: bool = True,
    progress: bool = True,
    html: bool = True,
    raise_on_error: bool = False,
    overwrite: bool = False,
) -> RunOutcome:
    """Validate parameters, execute ``notebook`` into ``run_dir`` and finish its results.json.

    ``parameters`` are typed values (Python callers), ``cli_values`` ``[(name, text)]`` pairs;
    ``run_dir`` is injected as the notebook's ``run_dir`` parameter. Returns a
    :class:`RunOutcome` (``status`` ``"failed"`` when a cell failed, unless ``raise_on_error``).
    Raises :class:`~swiftlib.rundir.RunDirBusy` while another run holds ``run_dir`` and
    :class:`~swiftlib.rundir.RunDirFinished` for a finished run unless ``overwrite`` (then the
    rerun is staged and replaces it only when it succeeds; :mod:`swiftlib.rundir`).
    """
    notebook = Path(notebook)
    params = notebook_parameters(notebook)
    file_values = load_params_file(params_file, notebook) if params_file else {}
    resolved = resolve_parameters(
        notebook, file_values, cli_values, values=parameters, params=params
    )
    run_dir = check_run_dir_path(run_dir, "run_dir") if run_dir else default_run_dir(notebook)
    rank, world = launch_rank()
    canonical = rank == 0 or world == 1
    lock_dir = run_dir if canonical else run_dir / "ranks"
    make_run_dir(lock_dir, "run_dir")
    lock_name = LOCK_NAME if canonical else f".rank-{rank}.lock"
    with RunDirLock(lock_dir, run_dir, lock_name):
        staging = None
        if is_finished(run_dir):
            if not overwrite:
                raise RunDirFinished(
                    f"run directory {str(run_dir)!r} holds a finished run (results.json says "
                    "'ok'); pass --overwrite (run_notebook(overwrite=True)) to replace it "
                    "once the new run succeeds, or choose another -o"
                )
            if world > 1:
                raise RunDirError(
                    f"run directory {str(run_dir)!r} holds a finished run; a job of {world} "
                    "ranks does not replace one (choose a new run directory, or remove it)"
                )
            staging = prepare_staging(run_dir)
            log.info("%s holds a finished run: this rerun is staged in %s", run_dir, staging)
        work_dir = staging if staging is not None else run_dir
        outcome = _execute(
            notebook,
            work_dir,
            run_dir,
            resolved,
            params,
            rank,
            world,
            dict(
                kernel_name=kernel_name,
                log_output=log_output,
                progress_bar=progress,
                execution_timeout=cell_timeout,
            ),
            html,
        )
        if staging is not None:
            _settle_rerun(outcome, run_dir, staging)
    if outcome.status == "failed":
        log.error("%s failed in cell %s: %s", notebook.name, outcome.failed_cell, outcome.error)
        if raise_on_error:
            raise NotebookRunError(
                f"{notebook.name} failed in cell {outcome.failed_cell}: {outcome.error}", outcome
            )
    return outcome


def _execute(
    notebook: Path,
    work_dir: Path,
    run_dir: Path,
    resolved: dict,
    params: dict,
    rank: int,
    world: int,
    pm_options: dict,
    html: bool,
) -> RunOutcome:
    """Run the notebook into ``work_dir`` (``run_dir`` itself, or the staging folder of a
    rerun) and write its record; a full disk anywhere ends as ``failed``."""
    import nbformat
    import papermill as pm

    canonical = rank == 0 or world == 1
    out_dir = work_dir if canonical else work_dir / "ranks" / f"rank-{rank}"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    stale = work_dir / "results.json" if canonical else out_dir / "status.json"
    if stale.exists():
        stale.unlink()  # a stale one would read as this run's
    injected = dict(resolved)
    if "run_dir" in params:
        injected["run_dir"] = str(work_dir)
        resolved = {**resolved, "run_dir": str(run_dir)}  # the record names the run directory
    all_params = {name: p.default for name, p in params.items()} | resolved
    kind = notebook_kind(notebook, nbformat.read(str(notebook), as_version=4))
    log.info("running %s -> %s (rank %d/%d)", notebook, executed, rank, world)
    outcome = RunOutcome(notebook, work_dir, executed, "ok", all_params)
    t0 = time.perf_counter()
    try:
        with _ForwardSignals():
            pm.execute_notebook(
                str(notebook),
                str(executed),
                parameters=injected,
                request_save_on_cell_execute=True,
                report_mode=False,
                **pm_options,
            )
    except Exception as e:  # noqa: BLE001 - any failure of a cell or the kernel ends the run the same way
        outcome.status = "failed"
        failure = _failure(executed, e)
        outcome.failed_cell, outcome.failed_source, outcome.error, outcome.traceback = failure
        if out_of_space(e) or out_of_space(outcome.error):
            outcome.error = out_of_space_message(work_dir, _os_error(e) or outcome.error)
    outcome.seconds = time.perf_counter() - t0
    if outcome.status == "failed" and outcome.error.startswith("out of space"):
        _set_aside_unreadable(outcome)
    if not canonical:
        _guard_space(
            outcome, work_dir, lambda: _rank_status(out_dir / "status.json", rank, world, outcome)
        )
        return outcome
    if executed.exists() and outcome.executed == executed:
        from swiftlib.notebook_figures import extract_figures

        def figures():
            outcome.figures = extract_figures(executed, work_dir / "figures")

        _guard_space(outcome, work_dir, figures, "figure export")
        if html:

            def export():
                outcome.html = export_html(executed)

            _guard_space(outcome, work_dir, export, "HTML export")
    outcome.results_path = _guard_space(
        outcome,
        work_dir,
        lambda: _finish_results(work_dir, notebook, kind, all_params, outcome, world),
    )
    if outcome.results_path is None:
        _record_failure_without_space(work_dir, kind, outcome)
    return outcome


def _os_error(exc: BaseException) -> OSError | None:
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _guard_space(outcome: RunOutcome, work_dir: Path, step, what: str | None = None):
    """Run ``step()``; a full disk marks the run failed (``out of space on …``) instead of
    raising; other errors of an optional step (``what``) are logged and the run goes on."""
    try:
        return step()
    except Exception as e:  # noqa: BLE001 - sorted below: out of space, optional step, or raise
        if out_of_space(e):
            outcome.status = "failed"
            if not (outcome.error or "").startswith("out of space"):
                outcome.error = out_of_space_message(work_dir, _os_error(e) or e)
            log.error("%s", outcome.error)
            return None
        if what is None:
            raise
        log.warning("%s of %s failed: %s", what, outcome.executed, e)
        return None


def _set_aside_unreadable(outcome: RunOutcome) -> None:
    """A notebook cut short by a full disk is renamed ``<name>.partial`` when it is no longer
    valid JSON, so nothing presents a truncated file as the executed notebook."""
    import nbformat

    try:
        nbformat.read(str(outcome.executed), as_version=4)
    except FileNotFoundError:
        return
    except Exception:  # noqa: BLE001 - any parse error means a truncated file
        partial = outcome.executed.with_name(outcome.executed.name + ".partial")
        os.replace(outcome.executed, partial)
        outcome.executed = partial


def _record_failure_without_space(work_dir: Path, kind: str, outcome: RunOutcome) -> None:
    """results.json could not be written (full disk): remove any earlier one (it may say
    ``"ok"``, e.g. written by ``fit`` before a later cell filled the disk) and try a minimal
    ``failed`` record in the room that frees."""
    from swiftlib.results import save_results

    path = work_dir / "results.json"
    path.unlink(missing_ok=True)
    try:
        outcome.results_path = save_results(work_dir, kind, status="failed", error=outcome.error)
    except OSError as e:
        log.error("could not write %s either (%s): the run has no results.json", path, e)


def _settle_rerun(outcome: RunOutcome, run_dir: Path, staging: Path) -> None:
    """A staged rerun replaces the finished run when it succeeded; otherwise it is kept as
    ``rerun-failed-<time>/`` and the finished run stays as it was."""
    if outcome.status == "ok":
        try:
            swap_in(run_dir, staging)
        except OSError as e:
            outcome.status = "failed"
            outcome.error = (
                out_of_space_message(run_dir, e)
                if out_of_space(e)
                else f"replacing the finished run failed: {e}"
            )
            return
        outcome.run_dir = run_dir
        outcome.executed = run_dir / outcome.executed.name
        outcome.html = run_dir / outcome.html.name if outcome.html else None
        outcome.results_path = run_dir / "results.json" if outcome.results_path else None
        outcome.figures = [run_dir / "figures" / p.name for p in outcome.figures]
        return
    kept = keep_failed_rerun(run_dir, staging)
    log.error(
        "the rerun failed; the finished run in %s is unchanged, the failed rerun is kept in %s",
        run_dir,
        kept,
    )
    outcome.run_dir = kept
    outcome.executed = kept / outcome.executed.name
    outcome.html = kept / outcome.html.name if outcome.html else None
    outcome.results_path = kept / "results.json" if outcome.results_path else None
    outcome.figures = [kept / "figures" / p.name for p in outcome.figures]
