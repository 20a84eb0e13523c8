"""The interpretation notebooks executed through ``swiftlib run`` (papermill) on the tiny
cohort and its age model; their results.json values are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebooks.helpers import run_ok

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks" / "04_interpret"


def _run(name, run_dir, params):
    return run_ok(NB_DIR / name, run_dir, params)


@pytest.fixture(scope="module")
def common(age_run, interp_store):
    return {"checkpoint": str(age_run.best_checkpoint), "store_path": str(interp_store.root)}


def test_explore_embeddings_notebook(common, tmp_path):
    doc = _run(
        "01_explore_embeddings.ipynb",
        tmp_path / "embed",
        {**common, "site_permutations": 2, "cv_folds": 3},
    )
    m = doc["metrics"]
    assert doc["kind"] == "embed"
    for key in (
        "all/age_linear_r2",
        "all/age_knn_r2",
        "all/sex_linear_auroc",
        "all/site_balanced_acc",
        "all/site_chance",
    ):
        assert key in m, key
    assert 0 <= m["all/site_balanced_acc"] <= 1 and m["all/site_chance"] == pytest.approx(1 / 3)
    assert (tmp_path / "embed" / doc["artifacts"]["embeddings_window"]).exists()
    assert (tmp_path / "embed" / doc["artifacts"]["html"]).stat().st_size > 10_000


def test_brain_attributions_notebook(common, tmp_path):
    doc = _run(
        "02_brain_attributions.ipynb",
        tmp_path / "attr",
        {**common, "num_subjects": 2, "n_steps": 4, "split": "all"},
    )
    m = doc["metrics"]
    assert doc["kind"] == "attribute"
    assert 0 <= m["all/trained_auroc"] <= 1 and 0 <= m["all/randomised_auroc"] <= 1
    import nibabel as nib

    img = nib.load(tmp_path / "attr" / doc["artifacts"]["group_map"])
    mask = Path(common["store_path"]) / "ground_truth" / "brain_mask.nii.gz"
    assert img.shape == nib.load(mask).shape
    assert (tmp_path / "attr" / doc["artifacts"]["html"]).stat().st_size > 10_000
    # a person reads it: each figure renders once, no warning walls, a closing sentence
    import nbformat

    executed = nbformat.read(tmp_path / "attr" / "02_brain_attributions.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    for cell in code:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) <= 1, cell.source[:80]
        assert not [o for o in cell.outputs if o.get("name") == "stderr"], cell.source[:80]
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "voxel AUROC" in text and "randomised" in text
