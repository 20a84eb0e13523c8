"""Start-up (issue 16): what a package import or a data notebook's import cell pulls in.

Not timed — the times are in ``benchmarks/bench_import.py``; these tests pin *which* heavy
libraries stay out, so a new top-level import in a shared module shows up here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

import swiftlib.data
import swiftlib.interpret

HEAVY = ("torch", "lightning", "sklearn", "nilearn", "plotly", "nbformat", "h5py", "monai")


def _modules_after(code: str, env=None) -> dict:
    """Run ``code`` in a fresh interpreter; the heavy modules it left in ``sys.modules`` and
    the ``PLOTLY_RENDERER`` it left in the environment."""
    probe = (
        f"{code}\nimport json, os, sys\n"
        f"print(json.dumps({{'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules), "
        "'renderer': os.environ.get('PLOTLY_RENDERER')}))"
    )
    env = dict(os.environ, **(env or {}))
    env.pop("PLOTLY_RENDERER", None)
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_package_imports_leave_the_heavy_libraries_out():
    got = _modules_after("import swiftlib, swiftlib.data, swiftlib.interpret, swiftlib.viz")
    assert got["heavy"] == [], got


def test_a_data_notebook_import_cell_imports_no_torch_plotly_or_nbformat():
    cell = (
        "from swiftlib import notebook as nb\n"
        "from swiftlib.data.preprocess import PreprocessConfig, preprocess\n"
        "from swiftlib.data.store import open_store\n"
        "from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort\n"
        "from swiftlib.data.qc import qc_table\n"
        "from swiftlib.viz import data as viz\n"
        "print('swiftlib', nb.setup())\n"
    )
    got = _modules_after(cell)
    assert not {"torch", "lightning", "sklearn", "nilearn", "nbformat", "monai"} & set(
        got["heavy"]
    ), got
    assert got["renderer"] == "plotly_mimetype+notebook"


def test_the_renderer_goes_to_plotly_directly_once_plotly_io_is_loaded(monkeypatch):
    from swiftlib import notebook

    class Renderers:
        default = "json"

    fake = types.SimpleNamespace(renderers=Renderers())
    monkeypatch.setitem(sys.modules, "plotly.io._renderers", fake)
    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    notebook._plotly_renderer(notebook.PLOTLY_RENDERER)
    assert fake.renderers.default == "plotly_mimetype+notebook"
    assert "PLOTLY_RENDERER" not in os.environ
    monkeypatch.delitem(sys.modules, "plotly.io._renderers")
    notebook._plotly_renderer(notebook.PLOTLY_RENDERER)
    assert os.environ["PLOTLY_RENDERER"] == "plotly_mimetype+notebook"


@pytest.mark.parametrize("package", [swiftlib.data, swiftlib.interpret])
def test_every_lazy_name_resolves_and_is_listed(package):
    for name in package.__all__:
        value = getattr(package, name)
        assert value is not None, name
        assert name in dir(package), name
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018
