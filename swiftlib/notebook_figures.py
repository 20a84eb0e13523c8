"""The figures of an executed notebook as files beside it (``RUN_DIR/figures/``).

A headless run is looked at in a browser or over ``scp``: each figure a cell displayed is also
written as a file named by the cell's index in the notebook, so it can be opened, attached or
compared without Jupyter:

- matplotlib / nilearn figures (``image/png``, ``image/jpeg``, ``image/svg+xml``) →
  ``cell-<NNN>-<k>.png`` (``.jpg``, ``.svg``), the bytes the notebook shows;
- plotly figures (``application/vnd.plotly.v1+json``, or a ``text/html`` output that draws
  with ``Plotly.newPlot``) → ``cell-<NNN>-<k>.html``, a standalone page that loads
  ``plotly.min.js`` from the same folder (written once; offline, e.g. on a compute node).

``k`` counts the figures of one cell from 0. Files are written atomically.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from swiftlib.utils.io import atomic_path, atomic_write_text

__all__ = ["extract_figures", "FIGURES_DIR"]

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
_BINARY = {"image/png": ".png", "image/jpeg": ".jpg"}
_PLOTLY = "application/vnd.plotly.v1+json"
_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script src="plotly.min.js"></script></head>
<body>
{body}
</body></html>
"""


def _plotly_js(folder: Path) -> None:
    target = folder / "plotly.min.js"
    if target.exists():
        return
    from plotly.offline import get_plotlyjs

    atomic_write_text(target, get_plotlyjs())


def _plotly_page(figure_json: dict, title: str) -> str:
    import plotly.io as pio

    fig = pio.from_json(json.dumps(figure_json), skip_invalid=True)
    body = pio.to_html(fig, include_plotlyjs=False, full_html=False)
    return _PAGE.format(title=title, body=body)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def extract_figures(executed, out_dir=None) -> list[Path]:
    """Write every figure output of the executed notebook ``executed`` into ``out_dir``
    (default ``<its folder>/figures``); returns the files written (cell order). A folder
    from an earlier run of the same notebook is emptied first."""
    import nbformat

    executed = Path(executed)
    out_dir = Path(out_dir) if out_dir else executed.parent / FIGURES_DIR
    nb = nbformat.read(str(executed), as_version=4)
    found = []  # (cell index, k, suffix, payload)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        k = 0
        for output in cell.get("outputs", []):
            data = output.get("data") or {}
            if _PLOTLY in data:
                found.append((index, k, ".html", ("plotly", data[_PLOTLY])))
            elif "text/html" in data and "Plotly.newPlot" in str(data["text/html"]):
                found.append((index, k, ".html", ("plotly-html", str(data["text/html"]))))
            elif any(m in data for m in _BINARY):
                mime = next(m for m in _BINARY if m in data)
                found.append((index, k, _BINARY[mime], ("b64", data[mime])))
            elif "image/svg+xml" in data:
                found.append((index, k, ".svg", ("text", str(data["image/svg+xml"]))))
            else:
                continue
            k += 1
    if out_dir.exists():
        for old in out_dir.iterdir():
            if old.is_file():
                old.unlink()
    if not found:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, k, suffix, (how, payload) in found:
        path = out_dir / f"cell-{index:03d}-{k}{suffix}"
        title = f"{executed.stem}, cell {index}"
        if how == "b64":
            text = "".join(payload) if isinstance(payload, list) else payload
            _write_bytes(path, base64.b64decode(text))
        elif how == "plotly":
            _plotly_js(out_dir)
            atomic_write_text(path, _plotly_page(payload, title))
        elif how == "plotly-html":
            _plotly_js(out_dir)
            atomic_write_text(path, _PAGE.format(title=title, body=payload))
        else:
            atomic_write_text(path, payload)
        written.append(path)
    log.info("%d figure(s) of %s written to %s", len(written), executed.name, out_dir)
    return written
