"""JupyterLab in a real browser (``browser`` marker, ``make test-browser``): an executed
notebook opened in JupyterLab on 127.0.0.1 and rendered by headless Chromium must show the
notebook (its title and code cells) and its plotly figure — what a researcher sees on
NERSC JupyterHub after a papermill run. A screenshot is kept beside the executed notebook.

Needs Debian's ``chromium`` (installed with apt-get as root when missing; otherwise the test
skips and says why).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
EXPLORE = ROOT / "notebooks" / "01_data" / "03_explore_cohort.ipynb"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and apt-get as root is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        out = subprocess.run(install, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            pytest.skip(f"cannot install chromium: {out.stderr.strip()[-300:]}")
    return shutil.which("chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def executed(synth_store, tmp_path_factory):
    from swiftlib.runner import run_notebook

    out = run_notebook(EXPLORE, run_dir=tmp_path_factory.mktemp("browser") / "explore",
                       parameters={"store_path": str(synth_store.root)},
                       params_file=ROOT / "notebooks" / "params" / "ci.yaml", progress=False, log_output=False)
    assert out.status == "ok", out.error
    return out.executed


@pytest.fixture(scope="module")
def lab(executed):
    """JupyterLab serving the run dir on a free port: ``(url_of_the_notebook, log_path)``."""
    port, token = _free_port(), "swiftlib-browser-test"
    log = executed.parent / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={executed.parent}",
           "--ServerApp.allow_root=True", "--LabApp.news_url=", "--LabServerApp.app_settings_dir=" + str(executed.parent / ".lab-settings")]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=executed.parent)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start on port {port}: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/{executed.name}?token={token}", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_jupyterlab_renders_the_executed_notebook_and_its_plotly_figure(lab, executed):
    url, log = lab
    chromium = _chromium()
    shot = executed.parent / "jupyterlab.png"
    out = subprocess.run([chromium, *CHROMIUM_FLAGS, "--window-size=1400,1800", "--virtual-time-budget=30000",
                          f"--screenshot={shot}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    dom = out.stdout
    assert out.returncode == 0, out.stderr[-2000:]
    # the notebook panel with its cells, the markdown title rendered as a heading
    assert "jp-NotebookPanel" in dom and "jp-CodeCell" in dom, dom[-2000:]
    assert "Explore a cohort" in dom
    # the plotly output went through JupyterLab's plotly mime renderer into a live plot
    assert "js-plotly-plot" in dom, "no rendered plotly figure in the page"
    # the screenshot is a real PNG of the window size
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 1800)
    assert "Traceback" not in log.read_text()
