"""Keep the notebook pairs in step and check the house rules: ``make notebooks``.

Every notebook under ``notebooks/`` is a pair (``jupytext.toml``): the ``.ipynb`` that
JupyterLab and ``swiftlib run`` open, and its ``py:percent`` twin that reviewers read and ruff
lints. A save in JupyterLab writes both files; an edit of the ``.py`` in an editor writes one.
For every pair (or the notebooks named on the command line) this script

1. syncs the pair with jupytext (``jupytext --sync``: the more recently modified file wins),
2. strips outputs, execution counts and session metadata from the ``.ipynb``,
3. sets the kernelspec to the ``swiftlib`` kernel (:data:`KERNELSPEC`) in both files,
4. checks the house rules (docs/notebooks.md, STYLE 14–17) and prints every violation.

The kernel: every notebook asks for the Jupyter kernel named ``swiftlib``, the one
``make lab`` / ``make kernel`` register for ``.venv`` and ``swiftlib kernel install`` registers
for a conda environment on NERSC's JupyterHub (docs/nersc.md), so a notebook opens in the
environment that has swiftlib in both places (``python3`` there is NERSC's own Python).
``swiftlib run`` names its kernel itself (``--kernel``), so headless runs do not depend on it.

``--check`` writes nothing and exits 1 when a pair differs, a notebook carries outputs or a
rule is broken; ``tests/notebooks`` runs the same checks on the committed notebooks.

    python tools/sync_notebooks.py                      # every notebook
    python tools/sync_notebooks.py notebooks/03_downstream/01_finetune.py
    python tools/sync_notebooks.py --check
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

#: ``name: type = literal  # help`` (papermill reads the help from the comment; no ``=`` in it)
PARAMETER_LINE = re.compile(
    r"^(?P<name>[a-z_][a-z0-9_]*): (?P<type>\w+) = (?P<value>.+?)\s+#\s*(?P<help>\S.*)$"
)
NAME = re.compile(r"\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb")
#: the notebooks' kernel (swiftlib/kernel.py registers a kernel of this name)
KERNELSPEC = {"name": "swiftlib", "display_name": "swiftlib", "language": "python"}


def notebook_paths(paths=None) -> list[Path]:
    """The ``.ipynb`` of each pair: of the files named (either member), else every notebook
    under ``notebooks/`` (including one that exists only as a ``.py`` twin so far)."""
    if paths:
        return sorted({Path(p).resolve().with_suffix(".ipynb") for p in paths})
    found = set(NOTEBOOKS.glob("0*/*.ipynb"))
    found |= {p.with_suffix(".ipynb") for p in NOTEBOOKS.glob("0*/*.py")}
    return sorted(found)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _cells(nb) -> list[tuple[str, str, tuple]]:
    return [
        (c.cell_type, c.source.strip("\n"), tuple(c.metadata.get("tags", ()))) for c in nb.cells
    ]


def pair_differences(ipynb: Path) -> list[str]:
    """How the ``.ipynb`` and its ``.py`` twin differ (cell types, sources, tags); ``[]`` when
    they are in step."""
    import jupytext
    import nbformat

    twin = ipynb.with_suffix(".py")
    missing = [p for p in (ipynb, twin) if not p.is_file()]
    if missing:
        return [
            f"{_rel(p)} is missing: run `make notebooks` to create it from its pair"
            for p in missing
        ]
    a = _cells(nbformat.read(str(ipynb), as_version=4))
    b = _cells(jupytext.read(str(twin), fmt="py:percent"))
    if a == b:
        return []
    if len(a) != len(b):
        where = f"{len(a)} cells in the .ipynb, {len(b)} in the .py"
    else:
        i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        where = f"cell {i} differs ({a[i][1][:60]!r} vs {b[i][1][:60]!r})"
    return [f"{_rel(ipynb)} and {twin.name} are out of step: {where}; run `make notebooks`"]


def house_rules(ipynb: Path) -> list[str]:
    """Every violation of the notebook rules in ``ipynb`` (``[]`` when it follows them)."""
    import nbformat

    from swiftlib.runner import TYPES, notebook_parameters

    rel = _rel(ipynb)
    nb = nbformat.read(str(ipynb), as_version=4)
    problems = []
    if not NAME.fullmatch(ipynb.name):
        problems.append(f"{rel}: name it NN_verb[_object].ipynb")
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != KERNELSPEC["name"]:
        problems.append(
            f"{rel}: kernelspec {kernel!r}; expected {KERNELSPEC['name']!r} (the kernel `make "
            "kernel` / `swiftlib kernel install` registers): run `make notebooks`"
        )
    code = [c for c in nb.cells if c.cell_type == "code"]
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None):
            problems.append(
                f"{rel}: cell {i} has outputs or an execution count; "
                "run `make notebooks` to strip them"
            )
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        try:
            tree = ast.parse(c.source)
        except SyntaxError as e:
            problems.append(f"{rel}: cell {i} is not valid Python ({e.msg}, line {e.lineno})")
            continue
        defined = [
            n.name
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        if defined:
            problems.append(
                f"{rel}: cell {i} defines {', '.join(defined)}: "
                "move def/class into the swiftlib package"
            )

    # markdown explains: a title with what and why, and prose between the code
    title = nb.cells[0] if nb.cells else None
    if title is None or title.cell_type != "markdown" or not title.source.startswith("# "):
        problems.append(f"{rel}: the first cell must be a markdown title ('# ...')")
    elif len([line for line in title.source.splitlines()[1:] if line.strip()]) < 2:
        problems.append(
            f"{rel}: the title cell must say what the notebook does and why "
            "(a few lines under the title)"
        )
    if len(markdown) * 4 < len(code):
        problems.append(
            f"{rel}: {len(code)} code cells but {len(markdown)} markdown cells; "
            "explain each step in markdown (one markdown cell per four code cells)"
        )

    # one parameters cell of typed literals, each with a help comment
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{rel}: {len(tagged)} cells tagged 'parameters'; exactly one is needed")
        return problems
    names = []
    for line in nb.cells[tagged[0]].source.splitlines():
        m = PARAMETER_LINE.match(line)
        if not m:
            problems.append(
                f"{rel}: parameter line must read 'name: type = literal  # help': {line!r}"
            )
            continue
        if m["type"] not in TYPES:
            problems.append(
                f"{rel}: parameter {m['name']}: type {m['type']!r} is not one of {TYPES}"
            )
        if "=" in m["help"]:
            problems.append(
                f"{rel}: parameter {m['name']}: papermill cannot read a help comment containing '='"
            )
        try:
            ast.literal_eval(m["value"])
        except (ValueError, SyntaxError):
            problems.append(f"{rel}: parameter {m['name']}: {m['value']!r} is not a literal")
        names.append(m["name"])
    params = notebook_parameters(ipynb)
    if list(params) != names:
        problems.append(
            f"{rel}: papermill reads parameters {list(params)}, the cell declares {names}"
        )
    if "run_dir" not in params or params["run_dir"].default != "":
        problems.append(
            f'{rel}: needs the parameter run_dir: str = ""  # ... (swiftlib run fills it in)'
        )

    # imports print the version; the last code cell saves the results
    if not any("nb.setup()" in c.source or "__version__" in c.source for c in code[:2]):
        problems.append(
            f"{rel}: the imports cell must print the swiftlib version "
            '(print("swiftlib", nb.setup()))'
        )
    if not code or "save_results(" not in code[-1].source:
        problems.append(f"{rel}: the last code cell must call nb.save_results(...)")

    # every parameter has an effect; run settings go to nb.fit_config under their own names
    later = [ast.parse(c.source) for c in nb.cells[tagged[0] + 1 :] if c.cell_type == "code"]
    read = {
        n.id
        for tree in later
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    unused = [n for n in names if n not in read]
    if unused:
        problems.append(
            f"{rel}: parameters {unused} are never read after the parameters cell (no effect)"
        )
    for tree in later:
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if isinstance(call.func, ast.Attribute) and call.func.attr == "fit_config":
                renamed = [
                    kw.arg
                    for kw in call.keywords
                    if not (
                        isinstance(kw.value, ast.Name)
                        and kw.value.id == kw.arg
                        and kw.arg in params
                    )
                ]
                if renamed:
                    problems.append(
                        f"{rel}: pass parameters to nb.fit_config unchanged "
                        f"(name=name), not {renamed}"
                    )
    return problems


def set_kernelspec(ipynb: Path) -> bool:
    """Give ``ipynb`` the :data:`KERNELSPEC` (written atomically); True when it changed."""
    import nbformat

    from swiftlib.utils.io import atomic_path

    nb = nbformat.read(str(ipynb), as_version=4)
    if dict(nb.metadata.get("kernelspec", {})) == KERNELSPEC:
        return False
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    with atomic_path(ipynb, suffix=".ipynb.tmp") as tmp:
        nbformat.write(nb, str(tmp))
    return True


def sync(ipynb: Path) -> None:
    """Sync one pair (the newer file wins), strip the ``.ipynb`` and leave the ``.py`` no
    older than it (JupyterLab reads the inputs from the ``.py``)."""
    from jupytext.cli import jupytext as jupytext_cli

    from swiftlib.runner import strip_outputs

    twin = ipynb.with_suffix(".py")
    source = ipynb if ipynb.is_file() else twin
    jupytext_cli(["--sync", "--quiet", str(source)])
    if set_kernelspec(ipynb):  # the .ipynb is now the newer file: its header goes to the .py
        jupytext_cli(["--sync", "--quiet", str(ipynb)])
        print(f"kernelspec of {_rel(ipynb)} set to {KERNELSPEC['name']!r}")
    if strip_outputs(ipynb):
        print(f"stripped outputs from {_rel(ipynb)}")
    stamp = max(ipynb.stat().st_mtime, twin.stat().st_mtime)
    os.utime(twin, (stamp, stamp))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks", nargs="*", help="notebooks to sync (either file of a pair); default: all"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 on any difference or violation"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's swiftlib, also when it is not installed
    problems = []
    for ipynb in notebook_paths(args.notebooks):
        if not args.check:
            sync(ipynb)
        problems += pair_differences(ipynb)
        if ipynb.is_file():
            problems += house_rules(ipynb)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
