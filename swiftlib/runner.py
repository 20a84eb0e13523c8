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
Running again into the same run directory (a requeued SLURM job) replaces all of these.
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
    "int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict,
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
    out.write_text(body, encoding="utf-8")
    return out


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
) -> RunOutcome:
    """Validate parameters, execute ``notebook`` into ``run_dir`` and finish its results.json.

    ``parameters`` are typed values (Python callers), ``cli_values`` ``[(name, text)]`` pairs;
    ``run_dir`` is injected as the notebook's ``run_dir`` parameter. Returns a
    :class:`RunOutcome` (``status`` ``"failed"`` when a cell failed, unless ``raise_on_error``).
    """
    import nbformat
    import papermill as pm

    notebook = Path(notebook)
    params = notebook_parameters(notebook)
    file_values = load_params_file(params_file, notebook) if params_file else {}
    resolved = resolve_parameters(
        notebook, file_values, cli_values, values=parameters, params=params
    )
    run_dir = Path(run_dir) if run_dir else default_run_dir(notebook)
    if "run_dir" in params:
        resolved["run_dir"] = str(run_dir)
    rank, world = launch_rank()
    canonical = rank == 0 or world == 1
    out_dir = run_dir if canonical else run_dir / "ranks" / f"rank-{rank}"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    stale = run_dir / "results.json" if canonical else out_dir / "status.json"
    if stale.exists():
        stale.unlink()  # a stale one would read as this run's
    all_params = {name: p.default for name, p in params.items()} | resolved
    kind = notebook_kind(notebook, nbformat.read(str(notebook), as_version=4))
    log.info("running %s -> %s (rank %d/%d)", notebook, executed, rank, world)
    outcome = RunOutcome(notebook, run_dir, executed, "ok", all_params)
    t0 = time.perf_counter()
    try:
        with _ForwardSignals():
            pm.execute_notebook(
                str(notebook),
                str(executed),
                parameters=resolved,
                kernel_name=kernel_name,
                log_output=log_output,
                progress_bar=progress,
                execution_timeout=cell_timeout,
                request_save_on_cell_execute=True,
                report_mode=False,
            )
    except Exception as e:  # noqa: BLE001 - any failure of a cell or the kernel ends the run the same way
        outcome.status = "failed"
        failure = _failure(executed, e)
        outcome.failed_cell, outcome.failed_source, outcome.error, outcome.traceback = failure
    outcome.seconds = time.perf_counter() - t0
    if canonical:
        if html and executed.exists():
            try:
                outcome.html = export_html(executed)
            except Exception as e:  # noqa: BLE001 - the HTML is a convenience; never fail a run on it
                log.warning("HTML export of %s failed: %s", executed, e)
        outcome.results_path = _finish_results(run_dir, notebook, kind, all_params, outcome, world)
    else:
        _rank_status(out_dir / "status.json", rank, world, outcome)
    if outcome.status == "failed":
        log.error("%s failed in cell %s: %s", notebook.name, outcome.failed_cell, outcome.error)
        if raise_on_error:
            raise NotebookRunError(
                f"{notebook.name} failed in cell {outcome.failed_cell}: {outcome.error}", outcome
            )
    return outcome
