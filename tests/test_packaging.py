"""pyproject.toml, constraints.txt and environment.yml describe one dependency set."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
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


def _pip_section(env_file: Path) -> list[str]:
    env = yaml.safe_load(env_file.read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


@pytest.mark.slow
def test_environment_yml_installs_the_checkout_into_a_fresh_environment(tmp_path):
    """What ``conda env create -f environment.yml`` does after creating the conda packages,
    in a fresh clone: the pip section written to ``condaenv.*.requirements.txt`` beside the
    env file and ``pip install -r`` run in that folder (conda's pip installer). The new
    environment sees this machine's installed packages (so every pin is already satisfied and
    nothing is downloaded) but not swiftlib, which must come from the ``-e .[dev]`` line; then
    ``swiftlib kernel install`` in it and the kernel started from a clean environment import
    swiftlib from the clone."""
    import sysconfig

    clone, env = tmp_path / "clone", tmp_path / "env"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    shared = tmp_path / "shared"  # this machine's packages, less swiftlib
    shared.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "swiftlib" not in entry.name and not entry.name.endswith(".pth"):
            (shared / entry.name).symlink_to(entry)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_shared.pth").write_text(f"{shared}\n")
    requirements = clone / "condaenv.test.requirements.txt"
    requirements.write_text("\n".join(_pip_section(clone / "environment.yml")) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "install", "-q", "--no-index", "--no-build-isolation", "-r", requirements.name],
        cwd=clone,  # conda: cwd = the env file's folder
        check=True,
    )
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u, swiftlib; "
            "print(swiftlib.__file__); print(u.find_spec('brainmarks.models.swiftlib').origin)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where == [
        str(clone / "swiftlib" / "__init__.py"),
        str(clone / "brainmarks" / "models" / "swiftlib.py"),
    ]
    data = tmp_path / "jupyter"
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JUPYTER_DATA_DIR": str(data)}
    subprocess.run(  # = swiftlib kernel install --env ENV
        [str(python), "-m", "swiftlib.kernel", "install", "--env", str(env)], env=clean, check=True
    )
    code = (
        "from jupyter_client.manager import start_new_kernel\n"
        "km, kc = start_new_kernel(kernel_name='swiftlib', startup_timeout=60)\n"
        "out = []\n"
        "kc.execute_interactive('import swiftlib, sys; print(swiftlib.__file__, sys.prefix)', "
        "timeout=60, output_hook=lambda m: out.append(m['content'].get('text', '')))\n"
        "kc.stop_channels(); km.shutdown_kernel(now=True)\n"
        "print('RESULT', ''.join(out))\n"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-c", code],
        env=clean,
        cwd=tmp_path,  # the kernel's working folder (not this checkout: it would shadow the clone)
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    module_file, prefix = run.stdout.split("RESULT", 1)[1].split()
    assert module_file == str(clone / "swiftlib" / "__init__.py")
    assert Path(prefix) == env.resolve()
