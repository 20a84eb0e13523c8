"""swiftlib run: parameter checking, params files, execution, failure path, signal forwarding."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import nbformat
import pytest

from swiftlib.cli import main
from swiftlib.runner import (
    ParameterError,
    coerce_value,
    default_run_dir,
    load_params_file,
    notebook_parameters,
    resolve_parameters,
    run_notebook,
    strip_outputs,
)

PARAMS = """\
max_epochs: int = 2  # epochs; 2 for a smoke run
lr: float = 1e-3  # learning rate
label: str = "sex"  # label to predict
flag: bool = False  # a switch
overrides: dict = {"depths": [1, 1]}  # preset fields
grid: list = [24, 24, 24]  # store grid
fail_at: str = ""  # "" or "middle": raise in the middle cell
run_dir: str = ""  # where results.json goes"""


def _notebook(path: Path, cells: list[str], params: str = PARAMS, kind: str = "data") -> Path:
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test notebook"), p]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["swiftlib"] = {"kind": kind}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


TOY_CELLS = [
    'print("before", max_epochs, lr, label, flag, overrides, grid)',
    'if fail_at == "middle":\n    raise ValueError("boom in the middle")',
    "from swiftlib import notebook as nb\n"
    'nb.save_results(run_dir, "data", metrics={"toy/max_epochs": max_epochs, "toy/lr": lr},'
    ' parameters={"label": label})',
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return _notebook(tmp_path_factory.mktemp("nb") / "01_data" / "01_toy_notebook.ipynb", TOY_CELLS)


def test_parameters_are_read_with_types_defaults_and_help(toy):
    params = notebook_parameters(toy)
    assert list(params) == [
        "max_epochs",
        "lr",
        "label",
        "flag",
        "overrides",
        "grid",
        "fail_at",
        "run_dir",
    ]
    assert params["max_epochs"].type_name == "int" and params["max_epochs"].default == 2
    assert params["lr"].default == 1e-3 and params["overrides"].default == {"depths": [1, 1]}
    assert params["max_epochs"].help == "epochs; 2 for a smoke run"


@pytest.mark.parametrize(
    "type_name, text, expected",
    [
        ("int", "3", 3),
        ("float", "1e-4", 1e-4),
        ("float", "2", 2.0),
        ("bool", "true", True),
        ("str", "123", "123"),
        ("list", "[1, 2]", [1, 2]),
        ("dict", "{a: 1}", {"a": 1}),
    ],
)
def test_cli_text_is_parsed_by_type(toy, type_name, text, expected):
    from swiftlib.runner import NotebookParameter

    value = coerce_value(NotebookParameter("x", type_name, None, ""), text, from_text=True)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("max_epochs", "two", "max_epochs: expected int"),
        ("max_epochs", "2.5", "max_epochs: expected int"),
        ("flag", "maybe", "flag: expected bool"),
        ("grid", "24", "grid: expected list"),
        ("max_epoch", "2", "unknown parameter 'max_epoch'.*did you mean 'max_epochs'"),
    ],
)
def test_ill_typed_and_unknown_values_are_refused_listing_valid_parameters(toy, name, value, match):
    with pytest.raises(ParameterError, match=match) as e:
        resolve_parameters(toy, cli_values=[(name, value)])
    assert "valid parameters of 01_toy_notebook.ipynb" in str(e.value)
    assert "learning rate" in str(e.value)


def test_typed_values_from_a_file_are_checked_too(toy):
    with pytest.raises(ParameterError, match=r"label: expected str.*\(params file\)"):
        resolve_parameters(toy, file_values={"label": 1})
    with pytest.raises(ParameterError, match="max_epochs: expected int.*bool"):
        resolve_parameters(toy, values={"max_epochs": True})
    # -p wins over the file
    assert resolve_parameters(toy, {"lr": 1}, [("lr", "0.5")]) == {"lr": 0.5}


def test_params_file_flat_and_sectioned(toy, tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("max_epochs: 5\n")
    assert load_params_file(flat, toy) == {"max_epochs": 5}
    sec = tmp_path / "sec.yaml"
    sec.write_text("01_toy_notebook:\n  lr: 0.1\n01_other:\n  nonsense: 1\n")
    assert load_params_file(sec, toy) == {"lr": 0.1}
    with pytest.raises(ParameterError, match="not for notebook '02_missing'"):
        load_params_file(sec, "x/02_missing.ipynb")
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("01_toy_notebook:\n  lr: 0.1\nmax_epochs: 3\n")
    with pytest.raises(ParameterError, match="mixes notebook sections"):
        load_params_file(mixed, toy)


def test_default_run_dir_is_under_papermill_runs_by_stage(toy):
    d = default_run_dir(toy)
    assert d.parts[:2] == ("papermill_runs", "data") and d.name.endswith("-01_toy_notebook")


def test_run_writes_executed_notebook_html_and_results(toy, tmp_path):
    out = run_notebook(
        toy,
        run_dir=tmp_path / "run",
        cli_values=[("max_epochs", "7"), ("label", "age")],
        progress=False,
        log_output=False,
    )
    assert out.status == "ok" and out.executed == tmp_path / "run" / "01_toy_notebook.ipynb"
    assert out.html.exists() and "before 7" in out.html.read_text()
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["status"] == "ok" and doc["kind"] == "data"
    assert doc["metrics"] == {"toy/max_epochs": 7.0, "toy/lr": pytest.approx(1e-3)}
    # resolved notebook parameters (defaults + overrides + the injected run_dir);
    # the notebook's own under config
    assert doc["parameters"]["max_epochs"] == 7 and doc["parameters"]["grid"] == [24, 24, 24]
    assert doc["parameters"]["run_dir"] == str(tmp_path / "run")
    assert doc["config"] == {"label": "age"}
    assert doc["artifacts"]["executed_notebook"] == "01_toy_notebook.ipynb"
    assert doc["artifacts"]["html"].endswith(".html")
    assert doc["timings"]["notebook_s"] > 0


def test_cli_failure_keeps_partial_notebook_and_exits_nonzero(toy, tmp_path, capsys):
    rc = main(["run", str(toy), "-o", str(tmp_path / "fail"), "-p", "fail_at", "middle", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    # index in the executed notebook: papermill adds error banners (cells 0 and 5) and the
    # injected parameters
    assert "failing cell: 6" in err and "boom in the middle" in err and "raise ValueError" in err
    executed = tmp_path / "fail" / "01_toy_notebook.ipynb"
    nb = nbformat.read(str(executed), as_version=4)
    assert "An Exception was encountered" in nb.cells[0].source
    assert "injected-parameters" in nb.cells[3].metadata.tags
    # the cells before ran
    assert "before 2" in "".join(o.get("text", "") for o in nb.cells[4].outputs)
    assert nb.cells[6].outputs[0]["ename"] == "ValueError"
    assert nb.cells[7].outputs == []  # nothing after the failure
    doc = json.loads((tmp_path / "fail" / "results.json").read_text())
    assert doc["status"] == "failed" and "boom in the middle" in doc["error"]
    assert doc["error"].startswith("cell 6")
    assert (tmp_path / "fail" / "01_toy_notebook.html").exists()


def test_cli_refuses_bad_parameters_before_running(toy, tmp_path, capsys):
    rc = main(
        ["run", str(toy), "-o", str(tmp_path / "r"), "-p", "max_epoch", "3", "-p", "lr", "fast"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "unknown parameter 'max_epoch'" in err and "lr: expected float" in err
    # the valid parameters are listed
    assert "max_epochs" in err and "epochs; 2 for a smoke run" in err
    assert not (tmp_path / "r").exists()


def test_cli_list_params(toy, capsys):
    assert main(["run", str(toy), "--list-params"]) == 0
    out = capsys.readouterr().out
    assert "max_epochs" in out and "int" in out and "learning rate" in out


def test_notebook_reporting_failed_status_fails_the_run(tmp_path):
    path = _notebook(
        tmp_path / "01_data" / "01_reports_failure.ipynb",
        [
            "from swiftlib import notebook as nb\n"
            'nb.save_results(run_dir, "data", status="failed", error="3 subjects failed")'
        ],
    )
    out = run_notebook(path, run_dir=tmp_path / "run", progress=False, log_output=False)
    assert out.status == "failed" and out.error == "3 subjects failed"


def test_sigusr1_is_forwarded_to_the_kernel(tmp_path):
    ready, got = tmp_path / "ready", tmp_path / "got"
    path = _notebook(
        tmp_path / "02_pretrain" / "01_wait_for_signal.ipynb",
        [
            f"import pathlib, signal, time\n"
            f"signal.signal(signal.SIGUSR1,\n"
            f"              lambda s, f: pathlib.Path({str(got)!r}).write_text('USR1'))\n"
            f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
            f"t0 = time.time()\n"
            f"while not pathlib.Path({str(got)!r}).exists() and time.time() - t0 < 60:\n"
            f"    time.sleep(0.1)",
        ],
    )

    def send_when_ready():
        t0 = time.time()
        while not ready.exists() and time.time() - t0 < 120:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=send_when_ready, daemon=True).start()
    out = run_notebook(path, run_dir=tmp_path / "run", progress=False, log_output=False, html=False)
    assert got.read_text() == "USR1" and out.status == "ok"


def test_slurm_rank_other_than_zero_writes_under_ranks(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    out = run_notebook(toy, run_dir=tmp_path / "run", progress=False, log_output=False)
    assert out.executed == tmp_path / "run" / "ranks" / "rank-1" / "01_toy_notebook.ipynb"
    assert out.executed.exists() and out.html is None
    assert not (tmp_path / "run" / "results.json").exists()  # rank 0 owns results


def test_strip_outputs(tmp_path, toy):
    out = run_notebook(toy, run_dir=tmp_path / "run", progress=False, log_output=False, html=False)
    assert strip_outputs(out.executed) is True
    nb = nbformat.read(str(out.executed), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert strip_outputs(out.executed) is False
