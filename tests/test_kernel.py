"""swiftlib kernel install/uninstall: what it writes, bad input, and the kernel it writes
starting under jupyter_client from a clean environment (modules loaded, environment
activated, variables set) and running a notebook through swiftlib run's runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from swiftlib.kernel import (
    HELPER_NAME,
    KernelError,
    install_kernel,
    main,
    plan_kernel,
    uninstall_kernel,
)

ENV = Path(sys.prefix)  # the environment running the tests (.venv here, a conda env on NERSC)


@pytest.fixture
def jupyter_dir(tmp_path, monkeypatch) -> Path:
    """A private Jupyter data folder: kernels go to ``<it>/kernels``."""
    data = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    return data


def test_dry_run_prints_and_writes_nothing(jupyter_dir, capsys):
    rc = main(["kernel", "install", "--dry-run", "--module", "conda", "--module", "gpu/1.0"])
    out = capsys.readouterr().out
    assert rc == 0 and not jupyter_dir.exists()
    spec = json.loads(out.split("# ---")[1].split("\n", 1)[1])
    assert spec["argv"] == [
        "{resource_dir}/" + HELPER_NAME,
        str(ENV.resolve() / "bin" / "python"),
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    assert spec["metadata"]["swiftlib"]["modules"] == ["conda", "gpu/1.0"]
    assert "module load conda ||" in out and "module load gpu/1.0 ||" in out
    assert out.rstrip().endswith('exec "$@"')


def test_install_refuses_to_overwrite_without_force_and_uninstalls(jupyter_dir, capsys):
    assert main(["kernel", "install", "--name", "sw-test", "--omp-threads", "3"]) == 0
    kdir = jupyter_dir / "kernels" / "sw-test"
    helper = kdir / HELPER_NAME
    assert os.access(helper, os.X_OK)
    assert 'OMP_NUM_THREADS="${OMP_NUM_THREADS:-3}"' in helper.read_text()
    assert main(["kernel", "install", "--name", "sw-test"]) == 2
    err = capsys.readouterr().err
    assert "already exists in" in err and "--force" in err
    helper.write_text("#!/bin/bash\nexec false\n")
    assert main(["kernel", "install", "--name", "sw-test", "--force"]) == 0
    assert 'exec "$@"' in helper.read_text()
    assert main(["kernel", "uninstall", "--name", "sw-test"]) == 0 and not kdir.exists()
    assert main(["kernel", "uninstall", "--name", "sw-test"]) == 2
    assert "no kernel named 'sw-test'" in capsys.readouterr().err


def test_prefix_install_and_foreign_kernels_are_left_alone(jupyter_dir, tmp_path):
    plan = plan_kernel("sw-pre", prefix=tmp_path / "pfx")
    dest = install_kernel(plan, check_env=False)
    assert dest == tmp_path / "pfx" / "share" / "jupyter" / "kernels" / "sw-pre"
    assert (dest / "kernel.json").is_file() and not jupyter_dir.exists()
    other = jupyter_dir / "kernels" / "other"
    other.mkdir(parents=True)
    (other / "kernel.json").write_text(json.dumps({"argv": ["python"], "display_name": "x"}))
    with pytest.raises(KernelError, match="was not written by swiftlib kernel install"):
        uninstall_kernel("other")
    uninstall_kernel("other", force=True)
    assert not other.exists()


def test_bad_input_names_the_value(jupyter_dir, tmp_path):
    with pytest.raises(KernelError, match=r"--env '/no/such/env': no such directory"):
        plan_kernel(env="/no/such/env")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KernelError, match="has no bin/python"):
        plan_kernel(env=tmp_path / "empty")
    with pytest.raises(KernelError, match=r"--name 'my kernel'"):
        plan_kernel("my kernel")
    with pytest.raises(KernelError, match=r"--module 'conda; rm -rf'"):
        plan_kernel(modules=["conda; rm -rf"])
    with pytest.raises(KernelError, match="--omp-threads 0"):
        plan_kernel(omp_threads=0)
    with pytest.raises(SystemExit):  # argparse: --user and --prefix exclude each other
        main(["kernel", "install", "--user", "--prefix", str(tmp_path)])


_START = """
import json, sys
from jupyter_client.manager import start_new_kernel

km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=60)
out = []
try:
    code = (
        "import os, sys, swiftlib; print(__import__('json').dumps({'prefix': sys.prefix, "
        "'version': swiftlib.__version__, **{k: os.environ.get(k) for k in ('OMP_NUM_THREADS', "
        "'SWIFTLIB_DATA', 'SWIFTLIB_KERNEL', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'PATH')}}))"
    )
    hook = lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else 0
    reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    assert reply["content"]["status"] == "ok", reply["content"]
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
print("RESULT", "".join(out).strip())
"""


def _start_kernel(name: str, env: dict, tmp_path: Path) -> dict:
    """Start kernel ``name`` from a process with exactly ``env``; what the kernel reports."""
    script = tmp_path / "start.py"
    script.write_text(textwrap.dedent(_START))
    run = subprocess.run(
        [sys.executable, "-I", str(script), name],  # -I: no PYTHON* variables, no cwd
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("RESULT", 1)[1])


def test_the_kernel_starts_from_a_clean_environment(jupyter_dir, tmp_path):
    """Jupyter (here: jupyter_client in a process whose PATH has no environment on it, as
    JupyterHub's server is) starts the kernel through the helper: modules loaded (a stand-in
    ``module`` shell function, exported the way Lmod exports it), the environment activated,
    OMP_NUM_THREADS and SWIFTLIB_DATA set, ``import swiftlib`` working."""
    install_kernel(plan_kernel("sw-clean", modules=["conda", "cudatoolkit"], omp_threads=5))
    log = tmp_path / "module.log"
    clean = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "JUPYTER_DATA_DIR": str(jupyter_dir),
        "SCRATCH": str(tmp_path / "scratch"),
        "BASH_FUNC_module%%": f'() {{  echo "module $*" >> {log}; }}',
    }
    got = _start_kernel("sw-clean", clean, tmp_path)
    assert Path(got["prefix"]).resolve() == ENV.resolve()
    assert got["OMP_NUM_THREADS"] == "5" and got["SWIFTLIB_KERNEL"] == "sw-clean"
    assert got["SWIFTLIB_DATA"] == str(tmp_path / "scratch" / "swiftlib")
    assert log.read_text().splitlines() == ["module load conda", "module load cudatoolkit"]
    if (ENV / "pyvenv.cfg").is_file():
        assert Path(got["VIRTUAL_ENV"]).resolve() == ENV.resolve()


def test_swiftlib_run_uses_the_kernel(jupyter_dir, tmp_path, monkeypatch):
    """``swiftlib run --kernel sw-run`` (the runner's ``kernel_name``): the notebook executes
    in the installed kernel, i.e. through its helper."""
    from swiftlib.runner import run_notebook

    install_kernel(plan_kernel("sw-run"))
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir: str = ""  # where results.json goes')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# kernel check"),
        params,
        nbformat.v4.new_code_cell(
            "import os, pathlib\nfrom swiftlib import notebook as nb\n"
            'name = os.environ.get("SWIFTLIB_KERNEL", "")\n'
            'pathlib.Path(run_dir, "kernel.txt").write_text(name)\n'
            'nb.save_results(run_dir, "data")'
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "sw-run", "display_name": "sw", "language": "python"}
    nb.metadata["swiftlib"] = {"kind": "data"}
    path = tmp_path / "01_data" / "01_kernel_check.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, str(path))
    out = run_notebook(
        path, run_dir=tmp_path / "run", kernel_name="sw-run", html=False, progress=False
    )
    assert out.status == "ok", out.error
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "ok"
    assert (tmp_path / "run" / "kernel.txt").read_text() == "sw-run"  # the helper ran


@pytest.mark.parametrize("with_conda", [True, False])
def test_a_conda_prefix_is_activated_with_conda_or_put_on_path(jupyter_dir, tmp_path, with_conda):
    """A conda environment (``conda-meta/``): ``conda activate PREFIX`` where conda exists
    (a stand-in shell function, exported as ``module load conda`` exports conda's); else the
    prefix's ``bin`` first on PATH and CONDA_PREFIX set."""
    prefix = tmp_path / "condaenv"
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "bin").mkdir()
    python = prefix / "bin" / "python"  # stands in for the env's interpreter
    python.write_text(f'#!/bin/bash\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    plan = plan_kernel("sw-conda", env=prefix)
    assert plan.env_kind == "conda" and 'conda activate "$SWIFTLIB_ENV"' in plan.helper
    install_kernel(plan)
    log = tmp_path / "conda.log"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JUPYTER_DATA_DIR": str(jupyter_dir)}
    if with_conda:
        env["BASH_FUNC_conda%%"] = (
            f'() {{  [ "$1" = shell.bash ] && return 0; echo "conda $*" >> {log}; '
            'export CONDA_PREFIX="$2"; }'
        )
    got = _start_kernel("sw-conda", env, tmp_path)
    assert Path(got["CONDA_PREFIX"]) == prefix.resolve()
    if with_conda:
        assert log.read_text().splitlines() == [f"conda activate {prefix.resolve()}"]
    else:
        assert got["PATH"].split(":")[0] == str(prefix.resolve() / "bin") and not log.exists()


def test_notebook_sync_gives_both_files_of_a_pair_the_swiftlib_kernel(tmp_path):
    """tools/sync_notebooks.py: a pair asking for ``python3`` breaks the house rule and is
    set to the ``swiftlib`` kernel in the .ipynb and in the .py header, pair kept in step."""
    import importlib.util
    import shutil

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("sync_nb", root / "tools" / "sync_notebooks.py")
    sync_nb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync_nb)
    shutil.copy(root / "jupytext.toml", tmp_path)  # the pairing applies under notebooks/
    src = root / "notebooks" / "01_data" / "01_make_synthetic_cohort"
    (tmp_path / "notebooks" / "01_data").mkdir(parents=True)
    ipynb = tmp_path / "notebooks" / "01_data" / src.with_suffix(".ipynb").name
    for suffix in (".py", ".ipynb"):
        shutil.copy(src.with_suffix(suffix), ipynb.with_suffix(suffix))
    nb = nbformat.read(str(ipynb), as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "x"}
    nbformat.write(nb, str(ipynb))
    assert any("kernelspec 'python3'" in p for p in sync_nb.house_rules(ipynb))
    sync_nb.sync(ipynb)
    assert nbformat.read(str(ipynb), as_version=4).metadata["kernelspec"] == sync_nb.KERNELSPEC
    assert "#     name: swiftlib" in ipynb.with_suffix(".py").read_text()
    assert sync_nb.house_rules(ipynb) == [] and sync_nb.pair_differences(ipynb) == []
