"""Shared pieces of the notebook generators (tools/make_*notebooks.py): cell constructors,
a deterministic notebook builder and the write-or ``--check`` loop.

Notebooks are generated so they stay reviewable as Python and identical on regeneration
(stable cell ids, no outputs); each generator lists its notebooks and calls :func:`sync`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent

IMPORTS = """\
import swiftlib
from swiftlib import notebook as nb

print("swiftlib", nb.setup())"""


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str):
    return nbformat.v4.new_code_cell(text.strip("\n"))


def params(text: str):
    """The ``parameters`` cell (tagged for papermill)."""
    cell = code(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


def build(kind: str, cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating gives identical files
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "swiftlib": {"kind": kind},
    }
    return nb


def render(kind: str, cells) -> str:
    return nbformat.writes(build(kind, cells)) + "\n"


def sync(sources: dict, out_dir: Path, generator: str, argv=None) -> int:
    """Write every notebook of ``sources`` ({relative path: (kind, cells)}) under ``out_dir``;
    with ``--check`` in ``argv`` write nothing and return 1 when a committed file differs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in argv
    stale = []
    for rel, (kind, cells) in sources.items():
        path = out_dir / rel
        text = render(kind, cells)
        if path.exists() and path.read_text() == text:
            continue
        if check:
            stale.append(rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"notebooks differ from {generator} (run it, or move your edit there): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0
