"""pyproject.toml, constraints.txt and environment.yml describe one dependency set."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = list(req.specifier)
            assert spec.operator == "==", f"{line}: expected an exact pin"
            out[_norm(req.name)] = spec.version
    return out


def test_pyproject_constraints_and_environment_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    deps = [Requirement(r) for r in declared]
    pins = _pins((ROOT / "constraints.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    editable = [line for line in pip_block if line.startswith("-e ")]
    assert editable == ["-e .[dev]"] and pip_block[-1] == "-e .[dev]", (
        "environment.yml's pip section must end by installing this checkout: -e .[dev]"
    )
    pins_block = [line for line in pip_block if not line.startswith("-e ")]
    assert _pins(pins_block) == pins, "environment.yml pip pins differ from constraints.txt"
    assert "python=3.11" in env["dependencies"]
    for req in deps:
        name = _norm(req.name)
        assert name in pins, f"{req.name} is a dependency but has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"pin {name}=={pins[name]} violates {req}"
        )
    assert set(pins) == {_norm(r.name) for r in deps}, (
        "constraints.txt pins packages that are not dependencies"
    )
    assert pins["torch"] == "2.13.0"


def test_pyproject_uses_current_metadata():
    """The licence as an SPDX string (a TOML table is deprecated and warns at every install),
    with a setuptools that reads it."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "MIT"
    setuptools = next(
        Requirement(r)
        for r in doc["build-system"]["requires"]
        if Requirement(r).name == "setuptools"
    )
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")


def test_required_dependencies_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_norm(Requirement(r).name) for r in project["dependencies"]}
    for pkg in (
        "torch",
        "lightning",
        "torchmetrics",
        "monai",
        "deepspeed",
        "optuna",
        "optuna-integration",
        "papermill",
        "jupyterlab",
        "ipykernel",
        "ipywidgets",
        "nilearn",
        "nibabel",
        "plotly",
        "h5py",
        "captum",
        "umap-learn",
        "scikit-learn",
        "pandas",
        "tensorboard",
        "tqdm",
        "jupytext",
    ):
        assert pkg in names
    assert "neptune" in project["optional-dependencies"]
    assert project["scripts"]["swiftlib"] == "swiftlib.cli:main"


def test_readme_gives_the_two_setup_commands_first():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert blocks and blocks[0].split() == ["make", "demo"]
    assert blocks[1].split() == ["make", "test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_import_swiftlib_is_light():
    code = (
        "import sys, swiftlib; "
        "assert 'torch' not in sys.modules, 'import swiftlib pulled torch'; "
        "print(swiftlib.__version__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_brainmarks_plugin_ships_as_a_namespace_portion():
    """``brainmarks/models/swiftlib.py`` is packaged (setuptools' namespace discovery with the
    pyproject include list) and neither ``brainmarks/`` nor ``brainmarks/models/`` has an
    ``__init__.py``: a regular package there would hide the suite's own ``brainmarks``."""
    from setuptools import find_namespace_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert find["find"].get("namespaces", True)
    packages = find_namespace_packages(where=str(ROOT), include=find["find"]["include"])
    assert "brainmarks.models" in packages and "swiftlib.interpret" in packages
    assert not any(p.startswith(("tests", "notebooks", "benchmarks")) for p in packages)
    assert (ROOT / "brainmarks" / "models" / "swiftlib.py").is_file()
    assert not list((ROOT / "brainmarks").rglob("__init__.py"))
