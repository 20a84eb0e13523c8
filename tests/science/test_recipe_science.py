"""The small-cohort CPU recipe (``swiftlib.training.config.SMALL_COHORT_CPU``, the notebooks'
defaults and the CPU demo) on data it was not tuned on, and the few-shot claim
(``make science``; slow).

* **Second cohort** (issue 15.4): the recipe was chosen on the seed-0 cohort with coupling
  ±0.9. A cohort with another seed and a weaker mechanism (coupling 0.8 for sex 1, −0.6 for
  sex 0) must still be learned from scratch with the recipe unchanged: test AUROC ≥ 0.8 on
  its 20 held-out subjects.
* **Few-shot** (issue 15.3): SimMIM-pretrained vs randomly initialised encoders under a
  linear probe (the encoder frozen, a linear head trained) at N = 10, 20, 40 training
  participants, 8 seeds each (Wilcoxon's smallest two-sided p with n pairs is 2/2ⁿ: 5 seeds
  cannot reach 0.05). Goal: pretrained better at N = 20 with p < 0.05. The probe asks what
  pretraining put into the representation; full fine-tuning from the SimMIM encoder was a
  slower start than random initialisation on this cohort (docs/training.md, "Few-shot").

Each check writes ``papermill_runs/science/<check>/results.json`` before asserting.
"""

from __future__ import annotations

import pytest

from swiftlib.results import save_results
from swiftlib.training.config import SMALL_COHORT_CPU, recipe_fit_config

from .conftest import OUT

pytestmark = pytest.mark.slow

RECIPE = "small_cohort_cpu"
SECOND_COHORT = {
    **SMALL_COHORT_CPU["cohort"],
    "seed": 7,
    "sex_coupling": 0.8,
    "baseline_coupling": -0.6,
}
TRANSFER_MIN = 0.8
FEWSHOT_SIZES, FEWSHOT_SEEDS = (10, 20, 40), tuple(range(8))


def _cohort(root, settings: dict):
    from swiftlib.data.store import open_store
    from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort

    try:  # reuse a finished store made with the same settings (the generator is deterministic)
        store = open_store(root)
        made = store.manifest["dataset_info"].get("synthetic", {})
        if all(made.get(k) == v for k, v in settings.items() if k != "voxel_size"):
            return store
    except Exception:  # noqa: BLE001 - missing or partial: (re)make it
        pass
    return make_synthetic_cohort(root, config=SyntheticConfig(**settings), progress=False)


def test_recipe_learns_a_cohort_it_was_not_tuned_on():
    from swiftlib.training import fit

    store = _cohort(OUT / "second_cohort" / "store", SECOND_COHORT)
    cfg = recipe_fit_config(
        RECIPE,
        "finetune",
        OUT / "second_cohort" / "run",
        store.root,
        OUT / "second_cohort" / "splits",
        label="sex",
    )
    res = fit(cfg)
    m = res.metrics
    ok = m["test/auroc"] >= TRANSFER_MIN and m["test/num_subjects"] >= 20
    save_results(
        OUT / "second_cohort",
        "finetune",
        m,
        parameters={
            "cohort": SECOND_COHORT,
            "recipe": RECIPE,
            "thresholds": {"test/auroc": f">= {TRANSFER_MIN}", "test/num_subjects": ">= 20"},
        },
        artifacts={"run": OUT / "second_cohort" / "run"},
        status="ok" if ok else "failed",
        error=None if ok else f"test AUROC {m['test/auroc']:.3f} < {TRANSFER_MIN}",
    )
    assert ok, m


def test_pretraining_helps_when_labels_are_few():
    from swiftlib.training import fit
    from swiftlib.training.fewshot import FewShotGrid, run_fewshot

    root = OUT / "fewshot"
    store = _cohort(OUT / "recipe_store", {**SMALL_COHORT_CPU["cohort"], "seed": 0})
    splits = root / "splits"
    pre = fit(recipe_fit_config(RECIPE, "pretrain", root / "pretrain", store.root, splits))
    base = recipe_fit_config(RECIPE, "finetune", root / "grid", store.root, splits, label="sex")
    grid = FewShotGrid(
        sizes=FEWSHOT_SIZES,
        inits=("scratch", "pretrained"),
        modes=("linear_probe",),
        seeds=FEWSHOT_SEEDS,
    )
    res = run_fewshot(base, root / "grid", grid, pretrained=pre.best_checkpoint)
    m = {**res.metrics, "pretrain/val_recon_ratio": pre.metrics.get("val/recon_ratio")}
    gain, p = m["fewshot/n20_mean_diff"], m["fewshot/n20_p_value"]
    ok = gain > 0 and p < 0.05
    save_results(
        root,
        "fewshot",
        m,
        parameters={
            "grid": grid.to_dict(),
            "recipe": RECIPE,
            "thresholds": {"fewshot/n20_mean_diff": "> 0", "fewshot/n20_p_value": "< 0.05"},
        },
        artifacts={"table": res.table_path, "pretrained": pre.best_checkpoint},
        status="ok" if ok else "failed",
        error=None if ok else f"at N=20 pretrained - scratch {gain:+.3f} AUROC, p = {p:.3g}",
        extra={"paired": res.paired(by="n").to_dict(orient="records")},
    )
    assert ok, {k: v for k, v in m.items() if k.startswith("fewshot/n")}
