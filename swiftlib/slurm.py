"""``swiftlib slurm``: job scripts from the committed templates in ``slurm/``, and submission.

``render`` reads a template (chosen from the notebook's stage: pretraining →
``pretrain_deepspeed.sbatch``; tuning → ``optuna_workers.sbatch``; otherwise
``finetune.sbatch``), checks the notebook's parameters against the parameter file (so a typo
fails now, not after hours in the queue), and changes only values: ``#SBATCH`` directives
(``--nodes 8`` sets ``#SBATCH --nodes=8``; a commented ``##SBATCH --account=…`` becomes
active when given; an empty value comments a directive out) and the defaults of the
script's variables (``NOTEBOOK``, ``PARAMS``, ``RUN_DIR``, ``SWIFTLIB_ENV``,
``SWIFTLIB_MODULES``). The rendered script has the template's lines in the template's order.

``submit`` renders into ``RUN_DIR/job.sbatch`` (with absolute paths and the SLURM log in the
run dir), runs ``sbatch --parsable`` and returns the job id.

Before anything is queued, ``render`` refuses what could not run: a template that passes a
notebook parameter (``-p devices …``) the notebook does not have (a data notebook in the
4-GPU fine-tuning template would exit 2 after waiting in the queue; data notebooks get
``cpu.sbatch``), values with newlines or control characters (a newline in ``--account`` would
inject an ``#SBATCH`` line), a run directory with an unexpanded ``$VAR``, and malformed job ids
in ``after`` (``--after 123 124`` → ``#SBATCH --dependency=afterok:123:124``: the job starts
only when those ended successfully; pretrain → fine-tune as a chain, docs/notebooks.md).
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TEMPLATES",
    "SlurmError",
    "Submission",
    "template_for",
    "template_parameters",
    "render",
    "submit",
    "directives",
]

log = logging.getLogger(__name__)

TEMPLATES = {
    "pretrain": "pretrain_deepspeed.sbatch",
    "finetune": "finetune.sbatch",
    "tune": "optuna_workers.sbatch",
    "cpu": "cpu.sbatch",
}
_DIRECTIVE = re.compile(r"^(?P<hash>##?)SBATCH (?P<key>--[\w-]+)(=(?P<value>.*))?$")
_VARIABLE = re.compile(r"^(?P<name>[A-Z_]+)=\$\{(?P=name):-(?P<default>.*)\}$")
VARIABLES = ("NOTEBOOK", "PARAMS", "RUN_DIR", "SWIFTLIB_ENV", "SWIFTLIB_MODULES")
#: ``-p NAME`` in a template: a notebook parameter the job sets
_PASSED = re.compile(r"(?<!\w)-p\s+\"?([A-Za-z_]\w*)")
#: ``grep -w NAME``: a parameter the script passes only when the notebook lists it
_GUARDED = re.compile(r"--list-params \| grep -w ([A-Za-z_]\w*)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


class SlurmError(RuntimeError):
    """sbatch failed or is missing."""


@dataclass
class Submission:
    job_id: str
    run_dir: Path
    script: Path


def slurm_dir() -> Path:
    from swiftlib.notebook import project_root

    root = project_root()
    if not (root / "slurm").is_dir():
        import swiftlib

        root = Path(swiftlib.__file__).resolve().parent.parent
    return root / "slurm"


def template_for(notebook) -> Path:
    """The template for a notebook: by its stage folder / name (tuning, pretraining, else
    fine-tuning)."""
    from swiftlib.runner import notebook_stage

    name = Path(notebook).stem
    stage = notebook_stage(notebook)
    if re.search(r"(^|_)(tune|optuna)(_|$)", name):  # 03_tune_optuna, not 01_finetune
        key = "tune"
    elif stage == "pretrain":
        key = "pretrain"
    elif stage == "data" or not _has_scale_parameters(notebook):
        key = "cpu"  # one task: data notebooks, and evaluation without devices/num_nodes
    else:
        key = "finetune"
    return slurm_dir() / TEMPLATES[key]


def _has_scale_parameters(notebook) -> bool:
    """Whether the notebook takes ``devices`` and ``num_nodes`` (a multi-GPU template sets
    them); a notebook that cannot be read is left to the fine-tuning template's check."""
    from swiftlib.runner import notebook_parameters

    if not Path(notebook).is_file():
        return True
    params = notebook_parameters(notebook)
    return "devices" in params and "num_nodes" in params


def template_parameters(text: str) -> set[str]:
    """Notebook parameters a template always sets (``-p NAME``; not those it passes only when
    the notebook lists them)."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    body = "\n".join(lines)
    return set(_PASSED.findall(body)) - set(_GUARDED.findall(body))


def _check_value(what: str, value) -> None:
    if value is not None and _CONTROL.search(str(value)):
        raise ValueError(
            f"{what}={str(value)!r}: contains a newline or control character; a job-script "
            "value must be one line of printable text"
        )


def directives(script: str) -> dict[str, str | None]:
    """Active ``#SBATCH`` directives of a script: ``{"--nodes": "4", "--requeue": None, …}``."""
    out = {}
    for line in script.splitlines():
        m = _DIRECTIVE.match(line)
        if m and m["hash"] == "#":
            out[m["key"]] = m["value"]
    return out


def render(
    notebook,
    params_file=None,
    template=None,
    run_dir=None,
    sbatch: dict | None = None,
    variables: dict | None = None,
    check_params: bool = True,
    after=(),
) -> str:
    """The job script for ``notebook`` (see the module docstring).

    ``sbatch``: directive values by option name without dashes (``{"nodes": 8, "time":
    "02:00:00", "account": "m1234", "constraint": ""}``; ``""`` or ``None`` disables it);
    ``gpus_per_node`` also sets ``ntasks_per_node`` (one task per GPU) unless given.
    ``variables``: defaults of script variables (``{"SWIFTLIB_ENV": "myenv"}``).
    ``after``: job ids this job waits for (``afterok``: it starts when they all succeeded).
    """
    from swiftlib.rundir import check_run_dir_path
    from swiftlib.runner import load_params_file, resolve_parameters

    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {str(notebook)!r} does not exist")
    if check_params and params_file is not None:
        resolve_parameters(notebook, load_params_file(params_file, notebook))
    template = Path(template) if template else template_for(notebook)
    if not template.is_file():
        raise FileNotFoundError(f"SLURM template {str(template)!r} does not exist")
    text = template.read_text()
    _check_fits(notebook, template, text)
    if run_dir:
        check_run_dir_path(run_dir, "-o")

    opts = {k.replace("_", "-"): v for k, v in (sbatch or {}).items()}
    after = [str(a) for a in ([after] if isinstance(after, (str, int)) else after or ())]
    bad_ids = [a for a in after if not _JOB_ID.match(a)]
    if bad_ids:
        raise ValueError(f"--after {bad_ids}: expected SLURM job ids (digits, e.g. 123456)")
    if after:
        opts["dependency"] = "afterok:" + ":".join(after)
    for key, value in opts.items():
        _check_value(f"--{key}", value)
    if opts.get("gpus-per-node") not in (None, "") and "ntasks-per-node" not in opts:
        opts["ntasks-per-node"] = opts["gpus-per-node"]
    for key in ("gpus-per-node", "ntasks-per-node"):
        if key in opts and str(opts[key]) == "0":
            opts[key] = ""
    known = {m["key"][2:] for m in map(_DIRECTIVE.match, text.splitlines()) if m}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(
            f"{template.name} has no #SBATCH {', '.join('--' + u for u in unknown)}; "
            f"it sets: {', '.join(sorted(known))}"
        )
    values = {
        "NOTEBOOK": str(notebook),
        **({"PARAMS": str(params_file)} if params_file else {}),
        **({"RUN_DIR": str(run_dir)} if run_dir else {}),
        **(variables or {}),
    }
    bad = sorted(set(values) - set(VARIABLES))
    if bad:
        raise ValueError(f"unknown script variable(s) {bad}; expected some of {VARIABLES}")
    for key, value in values.items():
        _check_value(key, value)

    lines = []
    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        v = _VARIABLE.match(line)
        if m and m["key"][2:] in opts:
            value = opts[m["key"][2:]]
            if value in (None, ""):
                line = f"##SBATCH {m['key']}" + (f"={m['value']}" if m["value"] is not None else "")
            else:
                line = f"#SBATCH {m['key']}={value}"
        elif v and v["name"] in values:
            value = values[v["name"]]
            line = f"{v['name']}=${{{v['name']}:-{shlex.quote(str(value)) if value else ''}}}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _check_fits(notebook: Path, template: Path, text: str) -> None:
    """The template sets only parameters the notebook has (else the job exits 2 after
    waiting in the queue)."""
    from swiftlib.runner import notebook_parameters

    missing = sorted(template_parameters(text) - set(notebook_parameters(notebook)))
    if missing:
        suggestion = template_for(notebook)
        hint = (
            f"; use --template {suggestion} (chosen for this notebook by default)"
            if suggestion.name != template.name
            else ""
        )
        raise ValueError(
            f"template {template.name} sets notebook parameter(s) {missing} that "
            f"{notebook.name} does not have, so the job would fail after queueing{hint}"
        )


def submit(
    notebook,
    params_file=None,
    run_dir=None,
    sbatch: dict | None = None,
    variables: dict | None = None,
    template=None,
    sbatch_cmd: str = "sbatch",
    extra_args=(),
    after=(),
) -> Submission:
    """Render into ``RUN_DIR/job.sbatch`` (absolute paths, SLURM log ``RUN_DIR/slurm-%j.out``)
    and submit it with ``sbatch --parsable``."""
    from swiftlib.runner import default_run_dir

    notebook = Path(notebook).resolve()
    run_dir = Path(run_dir).resolve() if run_dir else default_run_dir(notebook).resolve()
    sb = dict(sbatch or {})
    name = Path(template).name if template else template_for(notebook).name
    sb.setdefault(
        "output",
        str(run_dir / ("slurm-%A_%a.out" if name == TEMPLATES["tune"] else "slurm-%j.out")),
    )
    script = render(
        notebook,
        Path(params_file).resolve() if params_file else None,
        template=template,
        run_dir=run_dir,
        sbatch=sb,
        variables=variables,
        after=after,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "job.sbatch"
    path.write_text(script)
    cmd = [sbatch_cmd, "--parsable", *extra_args, str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SlurmError(
            f"{sbatch_cmd!r} not found: submit from a SLURM login node, or use `swiftlib slurm "
            "render`"
        ) from None
    if proc.returncode != 0:
        raise SlurmError(
            f"sbatch failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    job_id = proc.stdout.strip().split(";")[0]
    log.info("submitted job %s, run dir %s", job_id, run_dir)
    return Submission(job_id, run_dir, path)
