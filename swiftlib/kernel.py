"""``swiftlib kernel install | uninstall``: a Jupyter kernel for this environment, NERSC-style.

NERSC's JupyterHub starts the kernels it finds in ``~/.local/share/jupyter/kernels``; for a
user's own conda environment NERSC documents a kernelspec whose ``argv`` starts with a small
helper shell script (``{resource_dir}/kernel-helper.sh``) that loads modules, activates the
environment and then ``exec``\\ s the kernel command it is given. ``swiftlib kernel install``
writes that pair for the environment it runs in (or ``--env PREFIX``):

* ``kernel.json``: ``argv = ["{resource_dir}/kernel-helper.sh", "<env>/bin/python", "-m",
  "ipykernel_launcher", "-f", "{connection_file}"]`` (Jupyter fills in both fields), the
  display name, and what it was written from (``metadata.swiftlib``);
* ``kernel-helper.sh``: ``module load`` each ``--module`` (where a ``module`` command exists),
  activates the environment (``conda activate`` for a conda prefix when conda is available,
  ``bin/activate`` for a venv, else the prefix's ``bin`` first on ``PATH``), exports
  ``OMP_NUM_THREADS`` (unless already set), ``SWIFTLIB_DATA=$SCRATCH/swiftlib`` when
  ``$SCRATCH`` is set (and ``SWIFTLIB_DATA`` is not), ``SWIFTLIB_KERNEL=<name>``, then
  ``exec "$@"``.

The kernel is the notebooks' own: every notebook under ``notebooks/`` asks for the kernel
named ``swiftlib`` (``make lab`` / ``make kernel`` register it locally; on JupyterHub,
``swiftlib kernel install`` does), and ``swiftlib run --kernel swiftlib`` runs a notebook in
it headless. See docs/nersc.md.

Run as ``swiftlib kernel …`` or ``python -m swiftlib.kernel …``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_NAME",
    "HELPER_NAME",
    "KernelError",
    "KernelPlan",
    "kernel_dir",
    "plan_kernel",
    "install_kernel",
    "uninstall_kernel",
    "add_subparser",
    "build_parser",
    "main",
]

log = logging.getLogger(__name__)

DEFAULT_NAME = "swiftlib"
HELPER_NAME = "kernel-helper.sh"
DEFAULT_OMP_THREADS = 8  # as the slurm/*.sbatch scripts
_NAME = re.compile(r"^[a-z0-9._-]+$", re.IGNORECASE)  # Jupyter's rule for kernel names
_MODULE = re.compile(r"^[A-Za-z0-9._+/@-]+$")


class KernelError(ValueError):
    """A kernel cannot be written or removed as asked (message says why and what to do)."""


@dataclass
class KernelPlan:
    """What ``install`` writes: ``kernel_dir/kernel.json`` and ``kernel_dir/kernel-helper.sh``."""

    name: str
    display_name: str
    kernel_dir: Path
    env: Path
    env_kind: str  # "conda" | "venv" | "prefix"
    python: Path
    modules: list[str] = field(default_factory=list)
    omp_threads: int = DEFAULT_OMP_THREADS
    prefix: str | None = None  # None: the user's kernels folder

    @property
    def spec(self) -> dict:
        from swiftlib import __version__

        return {
            "argv": [
                "{resource_dir}/" + HELPER_NAME,
                str(self.python),
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
            ],
            "display_name": self.display_name,
            "language": "python",
            "metadata": {
                "debugger": True,
                "swiftlib": {
                    "env": str(self.env),
                    "env_kind": self.env_kind,
                    "modules": list(self.modules),
                    "omp_threads": self.omp_threads,
                    "version": __version__,
                },
            },
        }

    @property
    def helper(self) -> str:
        """The helper script's text."""
        from swiftlib import __version__

        env = shlex.quote(str(self.env))
        lines = [
            "#!/bin/bash",
            f"# Jupyter kernel {self.name!r}: written by `swiftlib kernel install` "
            f"(swiftlib {__version__}).",
            "# NERSC's pattern for a kernel of your own environment: load modules, activate the",
            '# environment, then exec the kernel command Jupyter passes ("$@"). Edit freely;',
            "# `swiftlib kernel install --force` writes it again.",
            "",
        ]
        if self.modules:
            lines += ["if type module >/dev/null 2>&1; then"]
            for m in self.modules:
                q = shlex.quote(m)
                lines.append(
                    f"    module load {q} || echo \"kernel-helper: 'module load {m}' failed\" >&2"
                )
            lines += [
                "else",
                f'    echo "kernel-helper: no module command here; not loading: '
                f'{" ".join(self.modules)}" >&2',
                "fi",
                "",
            ]
        lines.append(f"SWIFTLIB_ENV={env}")
        if self.env_kind == "conda":
            lines += [
                "if type conda >/dev/null 2>&1; then",
                '    eval "$(conda shell.bash hook 2>/dev/null)" && conda activate "$SWIFTLIB_ENV"',
                "fi",
                'if [ "${CONDA_PREFIX:-}" != "$SWIFTLIB_ENV" ]; then  # no conda here',
                '    export PATH="$SWIFTLIB_ENV/bin:$PATH" CONDA_PREFIX="$SWIFTLIB_ENV"',
                "fi",
            ]
        elif self.env_kind == "venv":
            lines.append('source "$SWIFTLIB_ENV/bin/activate"')
        else:
            lines.append('export PATH="$SWIFTLIB_ENV/bin:$PATH"')
        lines += [
            "",
            f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-{self.omp_threads}}}"',
            'if [ -n "${SCRATCH:-}" ]; then',
            '    export SWIFTLIB_DATA="${SWIFTLIB_DATA:-$SCRATCH/swiftlib}"',
            "fi",
            f"export SWIFTLIB_KERNEL={shlex.quote(self.name)}",
            "",
            'exec "$@"',
            "",
        ]
        return "\n".join(lines)


def kernel_dir(name: str, prefix=None) -> Path:
    """Where the kernel ``name`` lives: the user's Jupyter data folder
    (``$JUPYTER_DATA_DIR`` or ``~/.local/share/jupyter``) ``/kernels/<name>``, or
    ``<prefix>/share/jupyter/kernels/<name>``."""
    from jupyter_core.paths import jupyter_data_dir

    base = Path(prefix) / "share" / "jupyter" if prefix is not None else Path(jupyter_data_dir())
    return base / "kernels" / name.lower()


def _check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise KernelError(
            f"--name {name!r}: a Jupyter kernel name uses letters, digits, '.', '_' and '-' only "
            "(e.g. 'swiftlib')"
        )
    return name


def _env_kind(env: Path) -> str:
    if (env / "conda-meta").is_dir():
        return "conda"
    if (env / "pyvenv.cfg").is_file() and (env / "bin" / "activate").is_file():
        return "venv"
    return "prefix"


def plan_kernel(
    name: str = DEFAULT_NAME,
    env=None,
    modules=(),
    display_name: str | None = None,
    prefix=None,
    omp_threads: int = DEFAULT_OMP_THREADS,
) -> KernelPlan:
    """Check the arguments and say what :func:`install_kernel` would write.

    Args:
        name: kernel name (what notebooks and ``swiftlib run --kernel`` ask for).
        env: prefix of the conda environment / venv to activate; None = the one running
            this (``sys.prefix``).
        modules: modules to ``module load`` first (e.g. ``["conda"]`` on Perlmutter).
        display_name: the name JupyterLab shows; None = ``"swiftlib (<env folder>)"``.
        prefix: install under ``<prefix>/share/jupyter/kernels`` instead of the user's folder.
        omp_threads: ``OMP_NUM_THREADS`` when the kernel's environment has none.
    """
    name = _check_name(name)
    env_path = Path(sys.prefix if env is None else env).expanduser()
    if not env_path.is_dir():
        raise KernelError(
            f"--env {str(env)!r}: no such directory; expected the prefix of a conda environment "
            "or venv (the folder holding bin/python), e.g. $CONDA_PREFIX"
        )
    env_path = env_path.resolve()
    python = env_path / "bin" / "python"
    if not python.exists():
        raise KernelError(
            f"--env {str(env_path)!r}: has no bin/python; expected the prefix of a conda "
            "environment or venv with swiftlib installed"
        )
    for m in modules:
        if not _MODULE.match(m):
            raise KernelError(
                f"--module {m!r}: expected a module name such as 'conda' or 'cudatoolkit/12.4'"
            )
    if int(omp_threads) < 1:
        raise KernelError(f"--omp-threads {omp_threads}: expected a positive number of threads")
    return KernelPlan(
        name=name,
        display_name=display_name or f"swiftlib ({env_path.name})",
        kernel_dir=kernel_dir(name, prefix),
        env=env_path,
        env_kind=_env_kind(env_path),
        python=python,
        modules=list(modules),
        omp_threads=int(omp_threads),
        prefix=None if prefix is None else str(prefix),
    )


def _check_env_imports(plan: KernelPlan) -> None:
    """The kernel needs ipykernel in the environment (error) and should find swiftlib (warn)."""
    import subprocess

    code = (
        "import importlib.util as u; "
        "print(' '.join(m for m in ('ipykernel', 'swiftlib') if u.find_spec(m) is None))"
    )
    try:
        out = subprocess.run(
            [str(plan.python), "-c", code], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"--env {str(plan.env)!r}: cannot run {plan.python}: {e}") from None
    missing = out.stdout.split() if out.returncode == 0 else ["ipykernel", "swiftlib"]
    if "ipykernel" in missing:
        raise KernelError(
            f"--env {str(plan.env)!r}: ipykernel is not installed there, so the kernel could not "
            f"start; install it ({plan.python} -m pip install ipykernel) or the whole project "
            "(pip install -e . in the checkout)"
        )
    if "swiftlib" in missing:
        log.warning(
            "swiftlib is not importable in %s: the notebooks will fail on `import swiftlib` "
            "(pip install -e . in the checkout, with that environment active)",
            plan.env,
        )


def install_kernel(plan: KernelPlan, force: bool = False, check_env: bool = True) -> Path:
    """Write the plan's kernel (through ``jupyter_client``'s ``KernelSpecManager``); refuses
    to replace an existing kernel of that name unless ``force``. Returns the kernel folder."""
    from jupyter_client.kernelspec import KernelSpecManager

    dest = plan.kernel_dir
    if dest.exists() and not force:
        raise KernelError(
            f"a kernel named {plan.name!r} already exists in {dest}; pass --force to replace it "
            f"(or --name to install another), or `swiftlib kernel uninstall --name {plan.name}`"
        )
    if check_env:
        _check_env_imports(plan)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{plan.name}-") as tmp:
        src = Path(tmp) / plan.name
        src.mkdir()
        (src / "kernel.json").write_text(json.dumps(plan.spec, indent=1) + "\n")
        helper = src / HELPER_NAME
        helper.write_text(plan.helper)
        helper.chmod(0o755)
        # replaces dest (the refusal above guards it)
        KernelSpecManager().install_kernel_spec(
            str(src), plan.name, user=plan.prefix is None, prefix=plan.prefix
        )
    log.info("installed kernel %r (%s) in %s", plan.name, plan.display_name, dest)
    return dest


def uninstall_kernel(name: str = DEFAULT_NAME, prefix=None, force: bool = False) -> Path:
    """Remove the kernel ``name`` from the user's (or ``prefix``'s) kernels folder; only one
    written by ``swiftlib kernel install`` unless ``force``. Returns the removed folder."""
    name = _check_name(name)
    dest = kernel_dir(name, prefix)
    if not (dest / "kernel.json").is_file():
        raise KernelError(
            f"no kernel named {name!r} in {dest.parent} (jupyter kernelspec list shows where "
            "kernels are)"
        )
    try:
        spec = json.loads((dest / "kernel.json").read_text())
    except (OSError, ValueError):
        spec = {}
    if "swiftlib" not in (spec.get("metadata") or {}) and not force:
        raise KernelError(
            f"the kernel {name!r} in {dest} was not written by swiftlib kernel install; pass "
            "--force to remove it anyway"
        )
    shutil.rmtree(dest)
    log.info("removed kernel %r from %s", name, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add ``kernel install | uninstall`` to ``swiftlib``'s subcommands (``args.func``)."""
    k = subparsers.add_parser(
        "kernel",
        help="register a Jupyter kernel for this environment (NERSC JupyterHub)",
        description=__doc__.split("\n\n")[0],
    )
    ksub = k.add_subparsers(dest="kernel_command", metavar="install|uninstall", required=True)
    text = "write the kernel (kernel.json + kernel-helper.sh) for this environment"
    i = ksub.add_parser("install", help=text, description=text)
    i.add_argument("--name", default=DEFAULT_NAME, help="kernel name (default swiftlib)")
    i.add_argument("--display-name", help="name shown in JupyterLab (default 'swiftlib (ENV)')")
    i.add_argument(
        "--env", help="prefix of the conda environment or venv to activate (default: this one)"
    )
    i.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="MODULE",
        help="module to load first, e.g. conda (repeatable)",
    )
    i.add_argument(
        "--omp-threads",
        type=int,
        default=DEFAULT_OMP_THREADS,
        help=f"OMP_NUM_THREADS when not set (default {DEFAULT_OMP_THREADS})",
    )
    i.add_argument("--force", action="store_true", help="replace a kernel of the same name")
    i.add_argument(
        "--dry-run", action="store_true", help="print what would be written, write nothing"
    )
    _location(i)
    i.set_defaults(func=_cmd_kernel)
    text = "remove a kernel written by swiftlib kernel install"
    u = ksub.add_parser("uninstall", help=text, description=text)
    u.add_argument("--name", default=DEFAULT_NAME, help="kernel name (default swiftlib)")
    u.add_argument(
        "--force", action="store_true", help="remove it even if swiftlib did not write it"
    )
    _location(u)
    u.set_defaults(func=_cmd_kernel)
    return k


def _location(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--user",
        action="store_true",
        help="the user's kernels (~/.local/share/jupyter/kernels, $JUPYTER_DATA_DIR; default)",
    )
    where.add_argument("--prefix", help="PREFIX/share/jupyter/kernels instead")


def _cmd_kernel(args) -> int:
    if args.kernel_command == "uninstall":
        dest = uninstall_kernel(args.name, prefix=args.prefix, force=args.force)
        print(f"removed kernel {args.name!r}: {dest}")
        return 0
    plan = plan_kernel(
        args.name,
        env=args.env,
        modules=args.module,
        display_name=args.display_name,
        prefix=args.prefix,
        omp_threads=args.omp_threads,
    )
    if args.dry_run:
        state = "exists: --force replaces it" if plan.kernel_dir.exists() else "new"
        print(f"# would write {plan.kernel_dir} ({state})")
        print(f"# --- {plan.kernel_dir / 'kernel.json'}")
        print(json.dumps(plan.spec, indent=1))
        print(f"# --- {plan.kernel_dir / HELPER_NAME} (executable)")
        print(plan.helper, end="")
        return 0
    dest = install_kernel(plan, force=args.force)
    print(f"installed kernel {plan.name!r} ({plan.display_name}): {dest}")
    print(f"  environment: {plan.env} ({plan.env_kind})")
    if plan.modules:
        print(f"  modules:     {' '.join(plan.modules)}")
    print(f"  use it:      notebooks ask for it; swiftlib run --kernel {plan.name} NOTEBOOK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A ``swiftlib`` parser with the ``kernel`` subcommand alone (for ``main``)."""
    parser = argparse.ArgumentParser(prog="swiftlib", description="swiftlib kernel")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="kernel", required=True)
    add_subparser(sub)
    return parser


def main(argv=None) -> int:
    """``python -m swiftlib.kernel install|uninstall [...]`` (= ``swiftlib kernel ...``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KernelError as e:
        print(f"swiftlib kernel: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(argv if argv[:1] == ["kernel"] else ["kernel", *argv]))
