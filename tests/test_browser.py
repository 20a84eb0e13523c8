"""JupyterLab in a real browser (``browser`` marker, ``make test-browser``): an executed
notebook opened in JupyterLab on 127.0.0.1 and rendered by headless Chromium must show the
notebook (its title and code cells) and its plotly figure — what a researcher sees on
NERSC JupyterHub after a papermill run. A screenshot is kept beside the executed notebook.

A second test edits a notebook pair in that browser the way a researcher does — a new cell,
run in the kernel, saved with JupyterLab's save command — and shows the save wrote both files
of the pair (jupytext's extension, as under ``make lab``) and that after ``make notebooks`` the
pair is in step and the notebook rules hold.

Needs Debian's ``chromium`` (installed with apt-get as root when missing; otherwise the test
skips and says why).
"""

from __future__ import annotations

import contextlib
import json
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
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--hide-scrollbars",
]


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

    out = run_notebook(
        EXPLORE,
        run_dir=tmp_path_factory.mktemp("browser") / "explore",
        parameters={"store_path": str(synth_store.root)},
        params_file=ROOT / "notebooks" / "params" / "ci.yaml",
        progress=False,
        log_output=False,
    )
    assert out.status == "ok", out.error
    return out.executed


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def _serve_lab(root_dir: Path, log: Path, *options: str):
    """JupyterLab serving ``root_dir`` on a free port: yields ``(base_url, token)``."""
    port, token = _free_port(), "swiftlib-browser-test"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=",
        f"--LabServerApp.app_settings_dir={log.parent / '.lab-settings'}",
        *options,
    ]
    # the notebooks ask for the `swiftlib` kernel (swiftlib kernel install): register it in a
    # Jupyter data folder of this test's own, as a user's `make kernel` does in theirs
    env = {**os.environ, "JUPYTER_DATA_DIR": str(log.parent / "jupyter-data")}
    subprocess.run(
        [sys.executable, "-m", "swiftlib.kernel", "install", "--force"],
        env=env,
        check=True,
        capture_output=True,
    )
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=root_dir, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status = f"http://127.0.0.1:{port}/api/status?token={token}"
                with urllib.request.urlopen(status, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start on port {port}: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def lab(executed):
    """JupyterLab serving the run dir on a free port: ``(url_of_the_notebook, log_path)``."""
    log = executed.parent / "jupyterlab.log"
    with _serve_lab(executed.parent, log) as (base, token):
        yield f"{base}/lab/tree/{executed.name}?token={token}", log


def test_jupyterlab_renders_the_executed_notebook_and_its_plotly_figure(lab, executed):
    url, log = lab
    chromium = _chromium()
    shot = executed.parent / "jupyterlab.png"
    out = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            "--window-size=1400,1800",
            "--virtual-time-budget=30000",
            f"--screenshot={shot}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
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


# ---------------------------------------------------------------------------------------
# A save in the browser: JupyterLab driven through the Chrome DevTools protocol
# ---------------------------------------------------------------------------------------

PAIR = "notebooks/01_data/03_explore_cohort"
NEW_CELL = "frames_per_subject = 2 * 3\nframes_per_subject"

#: Resolves once JupyterLab has loaded and restored its layout (evaluated with retries).
READY = (
    "(async () => { while (!window.jupyterapp) { await new Promise(r => setTimeout(r, 250)); }"
    " await window.jupyterapp.restored; return true; })()"
)

#: Runs in the page: wait for the notebook and its kernel, add a cell above the closing
#: save_results cell, run it, save with JupyterLab's own command, report what the page holds.
EDIT_RUN_SAVE = """
(async () => {
  const wait = (probe, ms = 90000) => new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      let value; try { value = probe(); } catch (e) { value = undefined; }
      if (value) resolve(value);
      else if (Date.now() - t0 > ms) reject(new Error('timed out: ' + probe));
      else setTimeout(tick, 250);
    };
    tick();
  });
  const app = await wait(() => window.jupyterapp);
  await app.restored;
  const panel = await wait(() => Array.from(app.shell.widgets('main'))
                                      .find(w => w.content && w.content.widgets));
  await panel.context.ready;
  await panel.sessionContext.ready;
  await wait(() => panel.sessionContext.session?.kernel?.status === 'idle');
  app.shell.activateById(panel.id);  // the notebook commands act on the current notebook
  await wait(() => app.shell.currentWidget === panel);
  const notebook = panel.content;
  const at = notebook.widgets.length - 1;
  notebook.activeCellIndex = at - 1;
  await app.commands.execute('notebook:insert-cell-below');
  notebook.activeCell.model.sharedModel.setSource(NEW_CELL);
  await app.commands.execute('notebook:run-cell');
  await wait(() => notebook.widgets[at].model.outputs.length > 0);
  await app.commands.execute('docmanager:save');
  await wait(() => !panel.context.model.dirty);
  return {cells: notebook.widgets.length, count: notebook.widgets[at].model.executionCount,
          kernel: panel.sessionContext.session.kernel.name};
})()
"""


@contextlib.contextmanager
def _devtools_page(chromium: str, url: str, profile: Path):
    """Headless Chromium on ``url`` with the DevTools protocol open: yields ``evaluate(js)``,
    which runs an (async) expression in the page and returns its JSON value."""
    import websocket  # websocket-client, a jupyter_server dependency

    port = _free_port()
    proc = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            "--window-size=1400,1800",
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            f"--user-data-dir={profile}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, pages = time.monotonic() + 60, []
        while not pages:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [
                        t
                        for t in json.load(r)
                        if t.get("type") == "page" and "/lab" in t.get("url", "")
                    ]
            except OSError:
                pass
            if not pages and (proc.poll() is not None or time.monotonic() > deadline):
                pytest.fail("Chromium did not open the DevTools port")
            time.sleep(0.25)
        ws = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=180, suppress_origin=True
        )

        def evaluate(expression: str, retries: int = 0):
            params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
            ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate", "params": params}))
            while True:
                reply = json.loads(ws.recv())
                if reply.get("id") == 1:
                    break
            if "error" in reply and retries > 0:  # e.g. a page still loading: its context went away
                time.sleep(1)
                return evaluate(expression, retries - 1)
            if "error" in reply:
                pytest.fail(f"DevTools: {reply['error']}")
            result = reply.get("result", {})
            if "exceptionDetails" in result:
                error = result["exceptionDetails"].get("exception", {}).get("description")
                pytest.fail(f"in the page: {error}")
            return result["result"].get("value")

        try:
            yield evaluate
        finally:
            ws.close()
    finally:
        _stop(proc)


def test_a_jupyterlab_save_then_make_notebooks_keeps_the_pair_and_the_rules(tmp_path):
    import nbformat

    from tests.notebooks.test_notebooks import sync_tool

    chromium = _chromium()
    checkout = tmp_path / "checkout"
    (checkout / PAIR).parent.mkdir(parents=True)
    shutil.copy(ROOT / "jupytext.toml", checkout / "jupytext.toml")
    for suffix in (".ipynb", ".py"):
        shutil.copy(ROOT / f"{PAIR}{suffix}", checkout / f"{PAIR}{suffix}")
    ipynb, twin = checkout / f"{PAIR}.ipynb", checkout / f"{PAIR}.py"
    log = tmp_path / "jupyterlab.log"
    with _serve_lab(checkout, log, "--LabApp.expose_app_in_browser=True") as (base, token):
        url = f"{base}/lab/tree/{PAIR}.ipynb?token={token}"
        with _devtools_page(chromium, url, tmp_path / "profile") as evaluate:
            evaluate(READY, retries=30)
            page = evaluate(EDIT_RUN_SAVE.replace("NEW_CELL", json.dumps(NEW_CELL)))
            # read before the browser closes (a closing page's kernel socket logs a traceback)
            served = log.read_text()
    assert page["count"] == 1 and page["kernel"] == "swiftlib", page
    # the browser's save wrote both files of the pair
    saved = nbformat.read(str(ipynb), as_version=4)
    assert len(saved.cells) == page["cells"] and saved.cells[-2].source == NEW_CELL
    assert saved.cells[-2].execution_count == 1
    assert saved.cells[-2].outputs[0]["data"]["text/plain"] == "6"
    assert NEW_CELL in twin.read_text()
    # make notebooks: outputs stripped, the pair in step, the rules hold
    assert sync_tool.main([str(ipynb)]) == 0
    synced = nbformat.read(str(ipynb), as_version=4)
    code = [c for c in synced.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert sync_tool.pair_differences(ipynb) == [] and sync_tool.house_rules(ipynb) == []
    assert "Saving 03_explore_cohort.py in format py:percent" in served  # jupytext wrote the twin
    assert "Traceback" not in served
