"""A notebook edited and saved the way JupyterLab saves it, then `make notebooks`
(``tools/sync_notebooks.py``): the pair stays in step, the outputs go, the rules still hold,
and a broken rule is reported by name. The save goes through jupytext's contents manager,
the one ``make lab`` serves (jupytext's server extension), so it writes both files of the
pair. ``tests/test_browser.py`` does the same save from a real browser."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from tests.notebooks.test_notebooks import ROOT, sync_tool

NOTEBOOK = "notebooks/01_data/03_explore_cohort.ipynb"
NEW_MARKDOWN = "## Frames per subject\nHow many frames each scan holds (all equal here)."
NEW_CODE = "frames = {s: store.num_frames(s) for s in store.subject_ids[:3]}\nframes"


@pytest.fixture()
def checkout(tmp_path):
    """A copy of one notebook pair under the repository's jupytext.toml."""
    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    for suffix in (".ipynb", ".py"):
        src = (ROOT / NOTEBOOK).with_suffix(suffix)
        dst = (tmp_path / NOTEBOOK).with_suffix(suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return tmp_path


def _lab_save(root: Path, edit) -> None:
    """Open the notebook through jupytext's contents manager, edit it like a JupyterLab session
    (``edit(nb)``: run cells, add cells), and save it through the same manager."""
    from jupytext import TextFileContentsManager

    cm = TextFileContentsManager(root_dir=str(root))
    model = cm.get(NOTEBOOK)
    nb = nbformat.from_dict(model["content"])
    edit(nb)
    time.sleep(0.01)  # the save is later than the files it read
    cm.save({"type": "notebook", "format": "json", "content": nb}, NOTEBOOK)


def _session(nb, new_cells) -> None:
    """What a JupyterLab session leaves in a notebook: outputs and execution counts, the
    kernel's language details, saved widget state, and the cells the researcher added."""
    for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = n + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"output {n}\n")]
        cell.metadata["scrolled"] = True
    nb.metadata["language_info"] = {
        "name": "python",
        "version": "3.11.2",
        "mimetype": "text/x-python",
    }
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    at = len(nb.cells) - 1  # before save_results, which stays last
    nb.cells[at:at] = new_cells


def test_a_jupyterlab_save_then_make_notebooks_keeps_the_pair_in_step(checkout):
    ipynb, twin = checkout / NOTEBOOK, (checkout / NOTEBOOK).with_suffix(".py")
    new = [nbformat.v4.new_markdown_cell(NEW_MARKDOWN), nbformat.v4.new_code_cell(NEW_CODE)]
    _lab_save(checkout, lambda nb: _session(nb, new))
    # the save itself wrote both files: the twin has the new cell, the .ipynb the outputs
    assert NEW_CODE in twin.read_text()
    saved = nbformat.read(str(ipynb), as_version=4)
    assert any(c.get("outputs") for c in saved.cells if c.cell_type == "code")
    assert any("outputs or an execution count" in p for p in sync_tool.house_rules(ipynb))

    assert sync_tool.main([str(ipynb)]) == 0  # make notebooks
    synced = nbformat.read(str(ipynb), as_version=4)
    code = [c for c in synced.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert synced.metadata["language_info"] == {"name": "python"}
    assert "widgets" not in synced.metadata
    assert not any("scrolled" in c.metadata for c in synced.cells)
    assert [c.source for c in synced.cells[-3:-1]] == [NEW_MARKDOWN, NEW_CODE]
    assert sync_tool.pair_differences(ipynb) == [] and sync_tool.house_rules(ipynb) == []
    # JupyterLab takes the inputs from the twin: it must not be older than the .ipynb
    assert twin.stat().st_mtime >= ipynb.stat().st_mtime
    # a second run changes nothing
    before = ipynb.read_text(), twin.read_text()
    assert sync_tool.main([str(ipynb)]) == 0 and (ipynb.read_text(), twin.read_text()) == before


def test_an_edit_of_the_py_twin_reaches_the_notebook(checkout):
    ipynb, twin = checkout / NOTEBOOK, (checkout / NOTEBOOK).with_suffix(".py")
    text = twin.read_text().replace(
        "max_subjects: int = 40  # subjects read", "max_subjects: int = 30  # subjects read"
    )
    assert text != twin.read_text()
    time.sleep(0.01)
    twin.write_text(text)
    assert sync_tool.pair_differences(ipynb)  # out of step until synced
    assert sync_tool.main([str(twin)]) == 0
    params = nbformat.read(str(ipynb), as_version=4).cells
    assert any("max_subjects: int = 30" in c.source for c in params)
    ids_before = [c.id for c in nbformat.read(str(ROOT / NOTEBOOK), as_version=4).cells]
    assert [c.id for c in params] == ids_before  # cells keep their ids: a small diff


def test_a_broken_rule_saved_from_jupyterlab_is_reported_by_name(checkout, capsys):
    ipynb = checkout / NOTEBOOK
    helper = nbformat.v4.new_code_cell("def helper(x):\n    return x + 1")
    _lab_save(checkout, lambda nb: _session(nb, [helper]))
    assert sync_tool.main([str(ipynb)]) == 1
    err = capsys.readouterr().err
    assert "defines helper: move def/class into the swiftlib package" in err
    # synced all the same: the twin shows the cell to review
    assert sync_tool.pair_differences(ipynb) == []
    assert "def helper(x):" in jupytext.read(str(ipynb.with_suffix(".py"))).cells[-2].source


def test_other_rules_are_reported_by_name(checkout):
    ipynb = checkout / NOTEBOOK
    nb = nbformat.read(str(ipynb), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\nunused_knob: int = 3  # a setting nothing reads\nbad = 1 + 1"
    nb.cells[0].source = "# Explore a cohort"
    nb.cells.append(nbformat.v4.new_code_cell("print('after the results')"))
    nbformat.write(nb, str(ipynb))
    problems = "\n".join(sync_tool.house_rules(ipynb))
    for expected in (
        "parameter line must read 'name: type = literal  # help': 'bad = 1 + 1'",
        "['unused_knob'] are never read after the parameters cell",
        "the title cell must say what the notebook does and why",
        "the last code cell must call nb.save_results(...)",
    ):
        assert expected in problems, problems


def test_the_environments_jupyterlab_pairs_notebooks():
    """``make lab`` needs no set-up: installing jupytext enables its server extension (which
    swaps in the contents manager that writes both files of a pair) and its JupyterLab extension."""
    import json
    import sys

    config = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "jupytext.json"
    extensions = json.loads(config.read_text())["ServerApp"]["jpserver_extensions"]
    assert extensions["jupyterlab_jupytext"] is True
    lab = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterlab-jupytext"
    assert (lab / "package.json").is_file()
