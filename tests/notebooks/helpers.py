"""Running a notebook in a test: through ``swiftlib run``'s Python entry, failing with the
notebook's own error when a cell fails or results.json says so."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat


def cell_errors(executed: Path) -> list:
    """The error outputs of an executed notebook."""
    nb = nbformat.read(str(executed), as_version=4)
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]


def run_ok(notebook: Path, run_dir: Path, params: dict) -> dict:
    """Run ``notebook`` into ``run_dir`` with ``params``; return its results.json (asserted ok)."""
    from swiftlib.runner import run_notebook

    out = run_notebook(
        notebook, run_dir=run_dir, parameters=params, progress=False, log_output=False
    )
    doc = json.loads((run_dir / "results.json").read_text())
    errors = cell_errors(run_dir / notebook.name)
    ok = out.status == "ok" and doc["status"] == "ok" and not errors
    assert ok, (doc.get("error"), errors[:1])
    return doc
