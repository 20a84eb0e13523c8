"""The tuning and few-shot notebooks executed through ``swiftlib run`` (papermill) with
CI-sized parameters on the tiny cohort; their results.json values are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiftlib.training import fit
from tests.conftest import tiny_fit_config
from tests.notebooks.helpers import run_ok

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks" / "03_downstream"


@pytest.fixture(scope="module")
def ci(train_store, tmp_path_factory):
    """CI-sized parameters shared by both notebooks: age regression on the tiny store, the
    swift_v2_test encoder from a 2-step SimMIM run, one-epoch runs."""
    root = tmp_path_factory.mktemp("tuning_nb")
    pre = fit(
        tiny_fit_config(
            train_store,
            root / "pre",
            kind="pretrain",
            trainer={"limit_train_batches": 2, "num_threads": 1},
        )
    )
    return (
        root,
        pre.best_checkpoint,
        {
            "store_path": str(train_store.root),
            "splits_dir": str(root / "splits"),
            "label": "age",
            "task": "regression",
            "model": "swift_v2_test",
            "model_overrides": {},
            "sequence_length": 8,
            "max_epochs": 1,
        },
    )


def _run(name: str, run_dir: Path, params: dict) -> dict:
    return run_ok(NB_DIR / name, run_dir, params)


def test_tune_notebook(ci):
    root, ckpt, common = ci
    run_dir = root / "tune"
    doc = _run(
        "03_tune_optuna.ipynb",
        run_dir,
        {
            **common,
            "init_from": ckpt,
            "n_trials": 2,
            "modes": ["linear_probe", "full"],
            "heads": ["linear"],
            "batch_sizes": [4],
            "layer_decay": [],
            "head_dropout": [],
            "study_name": "ci",
        },
    )
    m = doc["metrics"]
    assert doc["kind"] == "tune" and doc["monitor"] == "val/r2"
    assert doc["notebook"].endswith("03_tune_optuna.ipynb")
    assert m["tune/num_complete"] + m["tune/num_pruned"] == 2
    assert "test/r2" in m and m["test/num_subjects"] == 2
    assert (run_dir / "optuna.db").exists() and (run_dir / "trials.csv").exists()
    assert (run_dir / doc["artifacts"]["best_checkpoint"]).exists()
    assert set(doc["best_params"]) >= {"lr", "mode"}
    assert doc["parameters"]["n_trials"] == 2  # the notebook's parameters
    # n_trials 0 attaches to the study without running anything
    seen = _run(
        "03_tune_optuna.ipynb",
        root / "attach",
        {
            **common,
            "n_trials": 0,
            "study_name": "ci",
            "storage": str(run_dir / "optuna.db"),
            "study_dir": str(run_dir),
        },
    )
    assert seen["metrics"]["test/r2"] == pytest.approx(m["test/r2"])
    assert seen["states"] == doc["states"]


def test_fewshot_notebook(ci):
    root, ckpt, common = ci
    run_dir = root / "fewshot"
    doc = _run(
        "04_fewshot_curves.ipynb",
        run_dir,
        {**common, "pretrained": ckpt, "sizes": [4, "all"], "seeds": [0], "batch_size": 4},
    )
    m = doc["metrics"]
    assert doc["kind"] == "fewshot" and m["fewshot/num_cells"] == 4 and m["fewshot/num_pairs"] == 2
    # one mode: no extra "all" row
    assert len(doc["paired"]) == 1 and doc["paired"][0]["n_pairs"] == 2
    assert doc["parameters"]["sizes"] == [4, "all"] and 0 < m["fewshot/wilcoxon_p"] <= 1
    assert (run_dir / "fewshot.csv").exists() and len(list((run_dir / "runs").iterdir())) == 4


def test_demo_runs_tuning_and_fewshot_and_can_skip_them(monkeypatch, tmp_path):
    """``swiftlib demo`` runs a small study and few-shot curves after evaluation and before the
    interpretation stages (valid parameters with the CPU demo preset, each in a fresh run
    folder); ``--skip tune fewshot`` leaves them out; other stages cannot be skipped."""
    from types import SimpleNamespace

    from swiftlib import demo
    from swiftlib.cli import build_parser
    from swiftlib.runner import load_params_file, resolve_parameters

    ctx = {"data": str(tmp_path / "d"), "runs": str(tmp_path / "r"), "subjects": 40, "seed": 0}
    runs = [st.run for st in demo.STAGES]
    assert runs.index("evaluate") < runs.index("tune") < runs.index("fewshot") < runs.index("embed")
    for st in demo.STAGES:
        if st.run in demo.SKIPPABLE:
            nb = ROOT / st.notebook
            resolve_parameters(
                nb,
                file_values=load_params_file(ROOT / demo.PARAMS_FILE, nb),
                values={k: demo._fill(v, ctx) for k, v in st.params.items()},
            )
    calls = []
    monkeypatch.setattr(
        "swiftlib.runner.run_notebook",
        lambda nb, run_dir, **kw: (
            calls.append((nb.name, run_dir))
            or SimpleNamespace(
                results={}, status="ok", html=None, executed=run_dir / nb.name, error=None
            )
        ),
    )
    (tmp_path / "r" / "tune").mkdir(parents=True)
    (tmp_path / "r" / "tune" / "old-study.db").write_text("stale")
    later = [st for st in demo.STAGES if st.run in ("tune", "fewshot", "embed")]
    rows = demo.run_demo(tmp_path / "d", runs_dir=tmp_path / "r", stages=later, progress=False)
    assert [c[0] for c in calls] == [
        "03_tune_optuna.ipynb",
        "04_fewshot_curves.ipynb",
        "01_explore_embeddings.ipynb",
    ] and len(rows) == 3
    assert not (tmp_path / "r" / "tune" / "old-study.db").exists()
    calls.clear()
    demo.run_demo(
        tmp_path / "d",
        runs_dir=tmp_path / "r",
        stages=later,
        skip=["tune", "fewshot"],
        progress=False,
    )
    assert [c[0] for c in calls] == ["01_explore_embeddings.ipynb"]
    with pytest.raises(ValueError, match="cannot be skipped"):
        demo.run_demo(tmp_path / "d", runs_dir=tmp_path / "r", stages=[], skip=["pretrain"])
    args = build_parser().parse_args(["demo", "--skip", "tune", "fewshot"])
    assert args.skip == ["tune", "fewshot"]
    assert build_parser().parse_args(["demo"]).skip == []
