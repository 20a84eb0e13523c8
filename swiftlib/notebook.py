"""What every notebook needs besides the science: set-up, paths, run directories, results.

Notebooks stay thin (no ``def``/``class``); the little logic they share lives here::

    from swiftlib import notebook as nb
    nb.setup()                                   # logging into the notebook, plotly renderer
    store_path = nb.resolve(store_path)          # relative paths are relative to the project
    run_dir = nb.run_dir(run_dir, "pretrain")    # "" (interactive) -> papermill_runs/interactive/…
    config = nb.fit_config("pretrain", run_dir, batch_size=batch_size, ...)  # -> FitConfig
    ...
    nb.save_results(run_dir, "pretrain", metrics=..., artifacts=...)   # rank 0 writes results.json

The parameters -> run-config mapping (:func:`fit_config`) lives in :mod:`swiftlib.notebook_config`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

from swiftlib.notebook_config import fit_config, number_or_word

__all__ = [
    "setup",
    "launched_externally",
    "project_root",
    "resolve",
    "run_dir",
    "is_rank_zero",
    "elapsed",
    "save_results",
    "fit_config",
    "number_or_word",
]

log = logging.getLogger(__name__)

_T0 = time.perf_counter()

#: Warnings that say nothing useful to a notebook reader on CPU / tiny data.
_QUIET = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*GPU available but not used.*",
    r".*torch.cuda.amp.*",
    r".*LeafSpec.*",
)


def setup(level: int = logging.INFO, quiet_warnings: bool = True) -> str:
    """Route swiftlib's log messages into the notebook (stdout), choose a plotly renderer
    that works in JupyterLab *and* in the HTML export, hide warnings that do not matter
    on CPU smoke runs, and return ``swiftlib.__version__``."""
    global _T0
    from swiftlib import __version__

    _T0 = time.perf_counter()
    if launched_externally():
        _not_interactive()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("swiftlib",):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level)
        lg.propagate = False
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if quiet_warnings:
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
    try:  # inline figures for Figures returned by swiftlib.viz (registers IPython's formatters)
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and getattr(shell, "kernel", None) is not None:
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        pass
    _plotly_renderer(PLOTLY_RENDERER)
    return __version__


#: The mimetype shows in JupyterLab; "notebook" embeds plotly.js once so the executed
#: notebook's HTML export shows the figures offline (compute nodes, email).
PLOTLY_RENDERER = "plotly_mimetype+notebook"


def _plotly_renderer(name: str) -> None:
    """Choose plotly's default renderer without importing ``plotly.io`` now: its renderer
    module imports nbformat, whose schema validator costs seconds of start-up (jsonschema's
    optional format checkers). plotly reads ``PLOTLY_RENDERER`` when it first renders, so the
    cost moves to the first figure of the notebooks that draw one; when ``plotly.io`` is
    already loaded the renderer is set directly."""
    renderers = sys.modules.get("plotly.io._renderers")
    if renderers is not None:
        renderers.renderers.default = name
    else:
        os.environ["PLOTLY_RENDERER"] = name


def launched_externally() -> bool:
    """True when this process is one rank of several started by ``srun`` or ``torchrun``."""
    try:
        if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            return True
        return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _not_interactive() -> None:
    """Let Lightning run DDP/DeepSpeed in this kernel: it refuses those strategies in an
    "interactive environment" (a Jupyter kernel defines ``sys.ps1``) because it would have
    to spawn the other ranks itself. Under ``srun``/``torchrun`` every rank is its own
    kernel, started from outside, so this kernel is one process of a script-style job."""
    if hasattr(sys, "ps1"):
        del sys.ps1
    for name in (
        "lightning.fabric.utilities.imports",
        "lightning.pytorch.trainer.connectors.accelerator_connector",
    ):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "_IS_INTERACTIVE", False):
            module._IS_INTERACTIVE = False
    log.debug("rank of an externally launched job: Lightning may use DDP/DeepSpeed in this kernel")


def project_root(start=None) -> Path:
    """The swiftlib checkout above ``start`` (default: the working directory): the first
    folder holding both ``pyproject.toml`` and ``notebooks/``; ``$SWIFTLIB_ROOT`` wins;
    the working directory when there is none (e.g. a run from ``$SCRATCH``)."""
    if os.environ.get("SWIFTLIB_ROOT"):
        return Path(os.environ["SWIFTLIB_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "notebooks").is_dir():
            return d
    return here


def resolve(path: str) -> str:
    """A notebook path parameter as an absolute path: relative paths are relative to the
    project root (so a notebook opened from ``notebooks/02_pretrain/`` in JupyterLab finds
    ``data/demo/…`` like a headless run from the repository does); ``""`` stays ``""``."""
    if not path:
        return ""
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    return str(p if p.is_absolute() else project_root() / p)


def run_dir(run_dir: str, stage: str) -> Path:
    """The run directory: the ``run_dir`` parameter (``swiftlib run`` fills it in), or for
    an interactive session ``papermill_runs/interactive/<stage>/<timestamp>``; created."""
    if run_dir:
        out = Path(resolve(run_dir))
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = project_root() / "papermill_runs" / "interactive" / stage / stamp
    out.mkdir(parents=True, exist_ok=True)
    return out


def is_rank_zero() -> bool:
    """True outside distributed runs and on global rank 0 (SLURM, torchrun)."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            try:
                return int(os.environ[var]) == 0
            except ValueError:
                return True
    return True


def elapsed() -> float:
    """Seconds since :func:`setup`."""
    return time.perf_counter() - _T0


def save_results(
    run_dir,
    kind: str,
    metrics: dict | None = None,
    parameters: dict | None = None,
    artifacts: dict | None = None,
    timings: dict | None = None,
    **kw,
):
    """:func:`swiftlib.results.save_results` on rank 0 only (other ranks return None), with
    ``timings["total_s"]`` from :func:`setup` unless given; timings that ``fit`` wrote to
    the same run directory (``fit_s``, ``eval_s``) are kept, and so are the artifacts it
    listed that the notebook does not name (e.g. a DeepSpeed run's ``best_checkpoint_fp32``)
    while their files exist."""
    from swiftlib.results import save_results as _save
    from swiftlib.utils.io import read_json

    if not is_rank_zero():
        return None
    earlier = Path(run_dir) / "results.json"
    kept, kept_artifacts = {}, {}
    if earlier.is_file():
        try:
            doc = read_json(earlier)
        except ValueError:
            doc = {}
        kept = {k: v for k, v in (doc.get("timings") or {}).items() if k != "total_s"}
        named = set(artifacts or {})
        for k, v in (doc.get("artifacts") or {}).items():
            if k not in named and isinstance(v, str) and (Path(run_dir) / v).exists():
                kept_artifacts[k] = str(Path(run_dir) / v)
    timings = {**kept, "total_s": elapsed(), **(timings or {})}
    artifacts = {**kept_artifacts, **(artifacts or {})}
    return _save(
        run_dir,
        kind,
        metrics=metrics,
        parameters=parameters,
        artifacts=artifacts,
        timings=timings,
        **kw,
    )
