"""swiftlib.demo: the summary says, per stage, whether the planted signal was found."""

from __future__ import annotations

import math

import pytest

from swiftlib.demo import STAGES, THRESHOLDS, DemoStage, format_summary, verdict


def test_verdicts_apply_the_issue_thresholds():
    good = {"test/auroc": 0.96, "test/num_subjects": 21.0}
    assert verdict("finetune", good)[0] is True
    assert "0.96 on 21 unseen subjects" in verdict("finetune", good)[1]
    assert verdict("finetune", {**good, "test/num_subjects": 6.0})[0] is False  # too few
    assert verdict("evaluate", {**good, "test/auroc": 0.375})[0] is False
    maps = {"test/trained_auroc": 0.91, "test/randomised_auroc": 0.55}
    assert verdict("attribute", maps)[0] is True
    assert verdict("attribute", {**maps, "test/randomised_auroc": 0.7})[0] is False
    few = {
        "fewshot/smallest_n": 10.0,
        "fewshot/smallest_mean_diff": 0.12,
        "fewshot/smallest_wilcoxon_p": 0.0625,
        "fewshot/smallest_num_pairs": 5.0,
    }
    ok, text = verdict("fewshot", few)
    assert ok and "at 10 training subjects" in text and "+0.12" in text and "p = 0.062" in text
    assert verdict("fewshot", {**few, "fewshot/smallest_mean_diff": -0.03})[0] is False
    emb = {"all/sex_linear_auroc": 0.475, "all/site_balanced_acc": 0.78, "all/site_chance": 0.33}
    ok, text = verdict("embed", emb)
    assert not ok and "site read out at 0.78 (chance 0.33)" in text
    found, text = verdict("pretrain", {"val/recon_ratio": 0.995})  # no label: no verdict
    assert found is None and "0.995x the mean predictor's" in text
    assert verdict("explore", {"data/coupling_sex0": -0.86, "data/coupling_sex1": 0.88})[0]
    assert verdict("make_cohort", {"data/num_subjects": 40.0}) == (None, "")
    assert verdict("finetune", {})[0] is False  # a missing metric is not a success
    assert THRESHOLDS["auroc"] == 0.9 and THRESHOLDS["map_auroc"] == 0.8


def test_every_stage_that_looks_has_a_verdict_on_its_shown_metrics():
    looked = {st.run for st in STAGES if verdict(st.run, {})[1]}
    assert looked == {
        "explore",
        "pretrain",
        "finetune",
        "evaluate",
        "tune",
        "fewshot",
        "embed",
        "attribute",
    }


def test_summary_says_plainly_which_stages_found_the_signal():
    rows = [
        DemoStage("synthesise cohort", 10.0, {"num_subjects": "136"}, "a.html"),
        DemoStage(
            "fine-tune (sex)",
            30.0,
            {"test/auroc": "0.96"},
            "b.html",
            "ok",
            True,
            "test AUROC 0.96 on 21 unseen subjects",
        ),
        DemoStage(
            "brain attributions",
            8.0,
            {},
            "c.html",
            "ok",
            False,
            "planted-region voxel AUROC 0.52 (randomised model 0.50)",
        ),
    ]
    table = format_summary(rows)
    lines = table.splitlines()
    assert "planted signal" in lines[0]
    assert "yes: test AUROC 0.96 on 21 unseen subjects" in table
    assert "NO: planted-region voxel AUROC 0.52" in table
    assert "found in 1 of 2 stages" in lines[-1] and "48.0" in lines[-1]
    assert not math.isnan(sum(r.seconds for r in rows))


def test_explain_reads_the_metrics_against_chance_and_the_planted_truth(tmp_path):
    from swiftlib.demo import explain

    good = explain("finetune", {"test/auroc": 0.96, "test/num_subjects": 24.0}, label="sex")
    assert good.startswith("Test AUROC 0.96 on 24 subjects the model never saw (chance 0.5)")
    poor = explain("finetune", {"test/auroc": 0.375, "test/num_subjects": 6.0}, label="sex")
    assert "no reliable signal" in poor and "memorise" in poor and "With 6 test subjects" in poor
    assert "R² 0.90" in explain("finetune", {"test/r2": 0.903}, label="age")
    pre = explain("pretrain", {"val/recon_ratio": 0.995})
    assert "0.995x" in pre and "noise" in pre
    few = explain(
        "fewshot",
        {
            "fewshot/smallest_n": 10.0,
            "fewshot/smallest_mean_diff": -0.03,
            "fewshot/smallest_wilcoxon_p": 1.0,
            "fewshot/smallest_num_pairs": 3.0,
        },
    )
    assert few.startswith("At 10 training subjects") and "did not help" in few
    ahead = {
        "fewshot/smallest_n": 10.0,
        "fewshot/smallest_mean_diff": 0.19,
        "fewshot/smallest_wilcoxon_p": 0.25,
        "fewshot/smallest_num_pairs": 3.0,
    }
    assert "not significantly" in explain("fewshot", ahead) and "is 0.25" in explain(
        "fewshot", ahead
    )
    sure = explain("fewshot", {**ahead, "fewshot/smallest_wilcoxon_p": 0.01})
    assert sure.endswith("the pretrained encoder is ahead when labels are few.")
    emb = explain(
        "embed",
        {
            "all/sex_linear_auroc": 0.98,
            "all/null_label_linear_auroc": 0.5,
            "all/site_balanced_acc": 0.78,
            "all/site_chance": 0.33,
        },
    )
    assert "sex at AUROC 0.98, null_label at AUROC 0.50" in emb and "carry site" in emb
    with pytest.raises(ValueError, match="explain\\(kind='attribute'\\)"):
        explain("attribute", {})


def test_explain_names_the_planted_signal_of_a_synthetic_store(synth_store, tmp_path):
    from swiftlib.demo import explain

    store = synth_store
    text = explain(
        "finetune",
        {"test/auroc": 0.95, "test/num_subjects": 20.0},
        label="sex",
        store_path=store.root,
    )
    assert "found the planted signal (connectivity between sex_a and sex_b" in text
    assert "planted" not in explain(
        "finetune",
        {"test/auroc": 0.95, "test/num_subjects": 20.0},
        label="sex",
        store_path=tmp_path / "missing",
    )


def test_cpu_demo_preset_is_the_small_cohort_cpu_recipe():
    """cpu_demo.yaml (= the notebooks' defaults, tests/notebooks) and the Python recipe the
    science checks train with are one recipe."""
    from pathlib import Path

    import yaml

    from swiftlib.training.config import RECIPES

    recipe = RECIPES["small_cohort_cpu"]
    doc = yaml.safe_load((Path(__file__).parents[1] / "notebooks/params/cpu_demo.yaml").read_text())
    cohort = doc["01_make_synthetic_cohort"]
    assert {k: cohort[k] for k in recipe["cohort"]} == recipe["cohort"]
    for stage, kind in (("01_pretrain_simmim", "pretrain"), ("01_finetune", "finetune")):
        nb = doc[stage]
        assert (nb["model"], nb["model_overrides"]) == (recipe["model"], recipe["model_overrides"])
        assert {k: nb[k] for k in recipe["data"]} == recipe["data"], stage
        assert nb["max_epochs"] == recipe[kind]["max_epochs"], stage
    for stage in ("03_tune_optuna", "04_fewshot_curves"):
        assert doc[stage]["model_overrides"] == recipe["model_overrides"], stage


def test_a_second_demo_reruns_its_finished_stages(monkeypatch, tmp_path):
    """A finished run directory is kept unless the run says overwrite (swiftlib run's rule);
    the demo's stages are its own, so a second `make demo` replaces them (staged: a failed
    rerun keeps the finished run)."""
    from pathlib import Path
    from types import SimpleNamespace

    import swiftlib.runner
    from swiftlib import demo

    calls = []

    def fake_run_notebook(notebook, run_dir, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(
            results={"status": "ok", "metrics": {}},
            status="ok",
            html=None,
            executed=Path(run_dir) / "notebook.ipynb",
            error=None,
        )

    monkeypatch.setattr(swiftlib.runner, "run_notebook", fake_run_notebook)
    old_split = tmp_path / "d" / "splits" / "synthetic" / "default.json"
    old_split.parent.mkdir(parents=True)
    old_split.write_text("{}")  # an earlier recipe's split: made again with the cohort
    stage = demo.STAGES[0]
    demo.run_demo(out_dir=tmp_path / "d", runs_dir=tmp_path / "r", stages=[stage], progress=False)
    assert calls and all(c.get("overwrite") is True for c in calls)
    assert calls[0]["parameters"]["overwrite"] is True  # the cohort store itself
    assert not old_split.exists()
