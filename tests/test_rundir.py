"""Run directories: the lock, finished runs kept unless overwritten (staged reruns), bad
``-o`` paths, a full disk (injected, and a real tmpfs), figures written beside the notebook."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

from swiftlib.cli import main
from swiftlib.rundir import RunDirLock, check_run_dir_path, out_of_space
from swiftlib.runner import run_notebook
from tests.test_runner import TOY_CELLS, _notebook

QUIET = dict(progress=False, log_output=False, html=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return _notebook(tmp_path_factory.mktemp("nb") / "01_data" / "01_toy_notebook.ipynb", TOY_CELLS)


@pytest.fixture(scope="module")
def finished(toy, tmp_path_factory):
    """A finished (ok) run of the toy notebook; tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("finished") / "run"
    out = run_notebook(toy, run_dir=run, cli_values=[("max_epochs", "3")], **QUIET)
    assert out.status == "ok"
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_a_run_directory_in_use_is_refused_naming_the_holder(toy, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from swiftlib.rundir import RunDirLock\n"
            f"lock = RunDirLock({str(run)!r}).acquire(); print('locked', flush=True)\n"
            "sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["run", str(toy), "-o", str(run), "-q", "--no-html"])
        err = capsys.readouterr().err
    finally:
        holder.communicate("\n", timeout=30)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{str(run)!r} is in use by pid {holder.pid} on host {socket.gethostname()}" in err
    assert not (run / "results.json").exists()
    # the holder ended: its lock went with it, the directory is free
    with RunDirLock(run):
        pass


def test_a_finished_run_is_kept_and_a_failed_rerun_does_not_replace_it(
    toy, finished, tmp_path, capsys
):
    run = _copy(finished, tmp_path)
    before = (run / "results.json").read_bytes()
    rc = main(["run", str(toy), "-o", str(run), "-q", "--no-html"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds a finished run" in err and "--overwrite" in err
    assert (run / "results.json").read_bytes() == before

    # an overwrite that fails leaves the finished run as it was, the failed one beside it
    rc = main(["run", str(toy), "-o", str(run), "-q", "--no-html", "--overwrite",
               "-p", "fail_at", "middle", "-p", "max_epochs", "9"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "boom in the middle" in err
    assert (run / "results.json").read_bytes() == before
    assert _results(run)["metrics"]["toy/max_epochs"] == 3.0
    [kept] = run.glob("rerun-failed-*")
    assert _results(kept)["status"] == "failed" and f"partial executed notebook kept: {kept}" in err
    assert not (run / ".rerun").exists()


def test_an_overwrite_that_succeeds_replaces_the_finished_run(toy, finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.old").write_text("the first run's logs")
    out = run_notebook(toy, run_dir=run, cli_values=[("max_epochs", "5")], overwrite=True, **QUIET)
    assert out.status == "ok" and out.run_dir == run and out.executed == run / toy.name
    doc = _results(run)
    assert doc["status"] == "ok" and doc["metrics"]["toy/max_epochs"] == 5.0
    # the record names the run directory, not the staging folder the kernel wrote into
    assert doc["parameters"]["run_dir"] == str(run) and ".rerun" not in json.dumps(doc)
    assert not (run / "tensorboard").exists()  # the old run's logs do not mix with the new
    assert not (run / ".rerun").exists() and not (run / ".replaced").exists()


@pytest.mark.parametrize(
    "value, match",
    [
        ("$SCRATCH_NOT_SET_X/runs", r"unexpanded variable \$SCRATCH_NOT_SET_X .*not set"),
        ("${HOME}/runs", r"unexpanded variable \$HOME"),
        ("~/runs", "unexpanded '~'"),
    ],
)
def test_unexpanded_variables_are_refused_with_a_hint(toy, value, match, capsys):
    rc = main(["run", str(toy), "-o", value, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err
    assert not Path(value).exists()


def test_o_with_a_missing_or_read_only_parent_is_one_line(toy, tmp_path, capsys):
    rc = main(["run", str(toy), "-o", str(tmp_path / "no" / "such" / "run"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "parent folder" in err and "does not exist" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "no").exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root: mount a read-only file system instead
            _mount(ro, "tmpfs", "ro,size=64k")
        rc = main(["run", str(toy), "-o", str(ro / "run"), "-q"])
        err = capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
        ro.chmod(0o755)
    assert rc == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="is a file, not a folder"):
        (tmp_path / "f").write_text("")
        check_run_dir_path(tmp_path / "f" / "run", require_parent=True)


def _mount(target: Path, fstype: str, options: str) -> None:
    proc = subprocess.run(
        ["mount", "-t", fstype, "-o", options, fstype, str(target)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount {fstype} here: {proc.stderr.decode().strip()}")


def test_out_of_space_is_recognised_in_exceptions_and_kernel_text():
    assert out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "x")
    assert out_of_space(wrapped)
    assert out_of_space("OSError: [Errno 28] No space left on device: '/x/best.ckpt'")
    assert not out_of_space(OSError(errno.EACCES, "Permission denied"))
    assert not out_of_space("ValueError: boom")


def test_out_of_space_while_recording_results_says_failed(toy, tmp_path, monkeypatch):
    """The notebook wrote results.json "ok"; the runner's own write hits a full disk."""
    import swiftlib.utils.io as io

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "atomic_write_json", full)
    out = run_notebook(toy, run_dir=tmp_path / "run", **QUIET)
    assert out.status == "failed" and out.error.startswith(f"out of space on {tmp_path}")
    doc = _results(tmp_path / "run")  # written once the "ok" one was removed
    assert doc["status"] == "failed" and doc["error"].startswith("out of space on")


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    _mount(mnt, "tmpfs", "size=512k")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


FILL_DISK = [
    "with open(f'{run_dir}/checkpoint.bin', 'wb') as f:\n"
    "    for _ in range(64):\n"
    "        f.write(b'0' * 65536)",
    'print("x" * 200_000)',
]


@pytest.mark.parametrize(
    "cells",
    [FILL_DISK, ['print("x" * 600_000)', 'print("after")']],
    ids=["a-cell-fills-the-disk", "the-executed-notebook-does-not-fit"],
)
def test_a_full_disk_ends_the_run_failed_never_ok(tiny_disk, tmp_path, capsys, cells):
    """A real full file system. The notebook saves "ok" results first; then a cell fills the
    disk (as a checkpoint would), or its output makes the executed notebook too large to save
    (the issue's truncated notebook beside "ok"): the record says failed, and no truncated
    notebook is presented under the notebook's name."""
    nb = _notebook(tmp_path / "01_data" / "01_fills_disk.ipynb", [TOY_CELLS[2], *cells])
    run = tiny_disk / f"run-{uuid.uuid4().hex[:6]}"
    run.mkdir()
    rc = main(["run", str(nb), "-o", str(run), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and f"out of space on {tiny_disk}" in err and "Traceback" not in err[-300:]
    results = run / "results.json"
    if cells is not FILL_DISK:  # the kernel's files fit: the failed record is written
        assert results.exists() and (run / f"{nb.name}.partial").exists()
    if results.exists():
        doc = _results(run)
        assert doc["status"] == "failed" and "out of space" in doc["error"]
    executed = run / nb.name
    if executed.exists():  # a notebook kept under its own name is complete JSON
        nbformat.read(str(executed), as_version=4)


def test_figures_are_written_beside_the_executed_notebook(tmp_path):
    nb = _notebook(
        tmp_path / "01_data" / "01_figures.ipynb",
        [
            "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "%matplotlib inline\nfig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1], [1, 0])\n"
            "plt.show()",
            "import plotly.graph_objects as go\nimport plotly.io as pio\n"
            "pio.renderers.default = 'plotly_mimetype+notebook'\n"
            "go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name='planted')).show()",
            'print("no figure here")',
        ],
    )
    out = run_notebook(nb, run_dir=tmp_path / "run", **QUIET)
    assert out.status == "ok"
    figures = tmp_path / "run" / "figures"
    names = sorted(p.name for p in figures.iterdir())
    # cells: markdown 0, parameters 1, injected parameters 2, matplotlib 3, plotly 4
    assert names == ["cell-003-0.png", "cell-004-0.html", "plotly.min.js"], names
    assert (figures / "cell-003-0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (figures / "cell-004-0.html").read_text()
    assert '<script src="plotly.min.js">' in page and "planted" in page
    assert _results(tmp_path / "run")["artifacts"]["figures"] == "figures"
