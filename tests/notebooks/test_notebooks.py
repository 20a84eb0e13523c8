"""The stage notebooks: each a jupytext pair in step, the house rules on the committed files,
ruff on the py:percent twins, and the whole chain executed through ``swiftlib run`` (via the
demo's stage table) with the CI-sized preset. The rules themselves live in
``tools/sync_notebooks.py`` (``make notebooks`` prints the same messages)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from swiftlib.runner import notebook_parameters, resolve_parameters
from tests.notebooks.helpers import cell_errors

ROOT = Path(__file__).resolve().parents[2]
PARAMS_DIR = ROOT / "notebooks" / "params"


def _load_tool():
    path = ROOT / "tools" / "sync_notebooks.py"
    spec = importlib.util.spec_from_file_location("sync_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_tool = _load_tool()


def _committed_notebooks() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "notebooks/*.ipynb", "notebooks/**/*.ipynb"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        files = sorted({ROOT / f for f in out if (ROOT / f).exists()})
    except (OSError, subprocess.CalledProcessError):
        files = []
    return files or sorted((ROOT / "notebooks").glob("0*/*.ipynb"))


NOTEBOOKS = _committed_notebooks()


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT / "notebooks"))


def test_there_are_stage_notebooks():
    names = {_id(p) for p in NOTEBOOKS}
    for expected in (
        "01_data/01_make_synthetic_cohort.ipynb",
        "01_data/02_preprocess_nifti.ipynb",
        "01_data/03_explore_cohort.ipynb",
        "02_pretrain/01_pretrain_simmim.ipynb",
        "02_pretrain/02_pretrain_contrastive.ipynb",
        "03_downstream/01_finetune.ipynb",
        "03_downstream/02_evaluate.ipynb",
        "03_downstream/03_tune_optuna.ipynb",
        "03_downstream/04_fewshot_curves.ipynb",
        "04_interpret/01_explore_embeddings.ipynb",
        "04_interpret/02_brain_attributions.ipynb",
    ):
        assert expected in names
    # every notebook found by the sync tool (a .py without its .ipynb included) is committed
    assert set(sync_tool.notebook_paths()) == set(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_committed_notebook_follows_the_house_rules(path):
    problems = sync_tool.house_rules(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_and_its_py_twin_are_in_step(path):
    problems = sync_tool.pair_differences(path)
    assert not problems, "\n".join(problems)


def test_pairing_is_configured_for_the_notebooks_folder_only():
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(NOTEBOOKS[0]))
    assert config is not None and config.default_formats(str(NOTEBOOKS[0])) is not None
    assert config.default_formats(str(ROOT / "papermill_runs" / "x" / "01_finetune.ipynb")) is None


def test_ruff_passes_on_the_notebook_twins():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    out = subprocess.run(
        [ruff, "check", "--no-cache", "notebooks"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # the twins are what ruff reads: the .ipynb files are excluded (pyproject.toml)
    listed = subprocess.run(
        [ruff, "check", "--no-cache", "--show-files", "notebooks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert ".py" in listed and ".ipynb" not in listed


@pytest.mark.parametrize("preset", sorted(PARAMS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_params_presets_name_existing_notebooks_and_valid_values(preset):
    doc = yaml.safe_load(preset.read_text())
    by_stem = {p.stem: p for p in NOTEBOOKS}
    assert doc and all(k in by_stem for k in doc), f"sections must be notebook names: {sorted(doc)}"
    for stem, values in doc.items():
        resolve_parameters(by_stem[stem], file_values=values or {})  # raises on unknown/ill-typed


def test_cpu_demo_preset_equals_the_notebook_defaults():
    doc = yaml.safe_load((PARAMS_DIR / "cpu_demo.yaml").read_text())
    by_stem = {p.stem: p for p in NOTEBOOKS}
    for stem, values in doc.items():
        params = notebook_parameters(by_stem[stem])
        for k, v in values.items():
            assert params[k].default == v, (
                f"{stem}.{k}: default {params[k].default!r}, cpu_demo.yaml {v!r}"
            )


# ---------------------------------------------------------------------------------------
# The chain, executed (CI preset: 12 subjects at 8 mm, swift_v2_test, a few steps)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from swiftlib.demo import run_demo

    root = tmp_path_factory.mktemp("chain")
    # tuning and few-shot notebooks: tests/training/test_tuning_notebooks.py
    rows = run_demo(
        root / "data",
        runs_dir=root / "runs",
        num_subjects=12,
        seed=0,
        params_file="notebooks/params/ci.yaml",
        progress=False,
        skip=["tune", "fewshot"],
    )
    return root, rows


def _results(chain, stage):
    root, _ = chain
    doc = json.loads((root / "runs" / stage / "results.json").read_text())
    assert doc["status"] == "ok" and doc["error"] is None, doc["error"]
    assert not cell_errors(root / "runs" / stage / Path(doc["notebook"]).name)
    assert (root / "runs" / stage / doc["artifacts"]["html"]).stat().st_size > 10_000
    return doc


def test_chain_summary_lists_every_stage(chain):
    from swiftlib.demo import SKIPPABLE, STAGES, format_summary

    _, rows = chain
    assert [r.name for r in rows] == [s.name for s in STAGES if s.run not in SKIPPABLE]
    assert all(r.status == "ok" for r in rows)
    table = format_summary(rows)
    assert "evaluate (test split)" in table and "total" in table and ".html" in table


def test_chain_data_stages(chain):
    make = _results(chain, "make_cohort")
    assert make["kind"] == "data" and make["metrics"]["data/num_subjects"] == 12
    assert 0.5 < make["metrics"]["data/size_mb"] < 20
    # from ci.yaml
    assert make["parameters"]["num_subjects"] == 12 and make["parameters"]["voxel_size"] == 8.0
    pre = _results(chain, "preprocess")
    assert pre["metrics"]["data/written"] == 3 and pre["metrics"]["data/failed"] == 0
    # the NIfTI path reproduces the store bit for bit
    assert pre["metrics"]["data/identical_to_reference"] == 1.0
    explore = _results(chain, "explore")
    m = explore["metrics"]
    # the planted sex signal (coupling 0.9 vs -0.9) is visible in the raw time series
    assert m["data/coupling_sex1"] > 0.5 and m["data/coupling_sex0"] < -0.5
    assert m["data/num_sites"] == 3
    assert m["data/min_coverage"] > 0.9  # the QC table: every scan covers the MNI brain


def test_chain_pretrain(chain):
    root, _ = chain
    doc = _results(chain, "pretrain")
    m = doc["metrics"]
    assert doc["kind"] == "pretrain" and doc["monitor"] == "val/recon_loss"
    assert 0 < m["val/recon_loss"] < 2 and 0.3 < m["val/recon_ratio"] < 1.2
    ratio = m["val/recon_loss"] / m["val/mean_predictor_loss"]
    assert m["val/recon_ratio"] == pytest.approx(ratio, rel=1e-3)
    run = root / "runs" / "pretrain"
    assert doc["artifacts"]["best_checkpoint"] == "checkpoints/best.ckpt"
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "reconstructions.pt").exists()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert doc["config"]["task"]["model"] == "swift_v2_test"
    assert doc["parameters"]["max_epochs"] == 2
    assert doc["timings"]["fit_s"] > 0
    assert doc["timings"]["notebook_s"] >= doc["timings"]["total_s"] * 0.5


def test_chain_finetune_and_evaluate_agree(chain):
    root, _ = chain
    ft = _results(chain, "finetune")
    assert ft["kind"] == "finetune" and ft["monitor"] == "val/auroc"
    # the recipe fine-tunes from random initialisation (docs/notebooks.md, "The demo recipe")
    assert ft["config"]["task"]["init_from"] is None
    assert ft["metrics"]["test/num_subjects"] == 2.0 and 0 <= ft["metrics"]["val/acc"] <= 1
    ev = _results(chain, "evaluate")
    # the evaluation notebook re-scores the best checkpoint on the same test subjects
    assert ev["metrics"]["test/num_subjects"] == 2.0
    for key in ("test/loss", "test/acc", "test/balanced_acc"):
        assert ev["metrics"][key] == pytest.approx(ft["metrics"][key], abs=1e-4), key
    auc_ft, auc_ev = ft["metrics"].get("test/auroc"), ev["metrics"].get("test/auroc")
    assert (auc_ft is None and auc_ev is None) or math.isclose(auc_ft, auc_ev, abs_tol=1e-4)
    assert [r["site"] for r in ev["by_site"]] and sum(r["num_subjects"] for r in ev["by_site"]) == 2
    assert (root / "runs" / "evaluate" / "predictions_test.csv").exists()
