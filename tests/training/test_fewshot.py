"""Few-shot grid: runs, table, pairing and paired test; resume (a second call runs nothing,
an interrupted cell reruns alone); a changed configuration and every bad input refused."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from swiftlib.training import fit
from swiftlib.training.fewshot import (
    FewShotError,
    FewShotGrid,
    grid_cells,
    paired_comparison,
    run_fewshot,
)
from tests.conftest import tiny_fit_config

GRID = FewShotGrid(
    sizes=(4, "all"), inits=("scratch", "pretrained"), modes=("linear_probe",), seeds=(0,)
)


def _base(store, root, **task):
    return tiny_fit_config(
        store,
        root / "base",
        task={"label": "age", "task": "regression", **task},
        trainer={"max_epochs": 1, "limit_train_batches": 1, "num_threads": 1},
        data={"windows_per_subject": 1, "eval_stride_between_seq": 2.0},
    )


@pytest.fixture(scope="module")
def pretrained(train_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot_pre")
    return fit(
        tiny_fit_config(
            train_store,
            root / "pre",
            kind="pretrain",
            trainer={"limit_train_batches": 2, "num_threads": 1},
        )
    ).best_checkpoint


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(
        sys.modules["swiftlib.training.fit"], "fit", lambda *a, **k: pytest.fail("training started")
    )


def test_grid_runs_collects_a_tidy_table_and_resumes(
    train_store, tmp_path, pretrained, monkeypatch
):
    grid_dir = tmp_path / "grid"
    res = run_fewshot(_base(train_store, tmp_path), grid_dir, GRID, pretrained=pretrained)
    t = res.table
    assert len(res.ran) == 4 and not res.skipped and not res.failed and res.metric == "test/r2"
    assert (
        sorted(t["n"]) == [4, 4, 8, 8]
        and set(t["size"]) == {"4", "all"}
        and (t["status"] == "ok").all()
    )
    assert set(t["init"]) == {"scratch", "pretrained"} and set(t["mode"]) == {"linear_probe"}
    assert t["test/r2"].notna().all() and (t["test/num_subjects"] == 2).all()
    assert (grid_dir / "fewshot.csv").exists() and len(
        pd.read_parquet(grid_dir / "fewshot.parquet")
    ) == 4
    # pairs share the subset (size, seed) and the training seed; only the init differs
    cells = {c: json.loads((grid_dir / "runs" / c / "cell.json").read_text()) for c in t["cell"]}
    a, b = cells["n4-pretrained-linear_probe-seed0"], cells["n4-scratch-linear_probe-seed0"]
    assert a["task"]["init_from"] == str(pretrained) and b["task"]["init_from"] is None
    a["task"]["init_from"] = None
    assert a == {**b, "run_dir": a["run_dir"]} and a["data"]["few_shot_n"] == 4
    paired = res.paired(by=None)
    assert paired.loc[0, "n_pairs"] == 2 and 0 < paired.loc[0, "wilcoxon_p"] <= 1
    doc = json.loads((grid_dir / "results.json").read_text())
    assert (
        doc["kind"] == "fewshot"
        and doc["metrics"]["fewshot/num_pairs"] == 2.0
        and doc["paired"][0]["n_pairs"] == 2
    )

    # a second call runs nothing
    monkeypatch.setattr(
        sys.modules["swiftlib.training.fit"],
        "fit",
        lambda *a, **k: pytest.fail("reran a finished cell"),
    )
    again = run_fewshot(_base(train_store, tmp_path), grid_dir, GRID, pretrained=pretrained)
    assert again.ran == [] and len(again.skipped) == 4
    pd.testing.assert_frame_equal(again.table, t)
    # an interrupted (failed) cell is rerun alone
    monkeypatch.undo()
    victim = grid_dir / "runs" / "nall-pretrained-linear_probe-seed0" / "results.json"
    victim.write_text(json.dumps({**json.loads(victim.read_text()), "status": "failed"}))
    third = run_fewshot(_base(train_store, tmp_path), grid_dir, GRID, pretrained=pretrained)
    assert third.ran == ["nall-pretrained-linear_probe-seed0"] and len(third.skipped) == 3
    # a rewritten pretrained checkpoint reruns the pretrained cells only
    os.utime(pretrained, ns=(1, 1))
    monkeypatch.setattr(sys.modules["swiftlib.training.fit"], "fit", lambda cfg, **k: cfg)
    fourth = run_fewshot(_base(train_store, tmp_path), grid_dir, GRID, pretrained=pretrained)
    assert sorted(fourth.ran) == [
        "n4-pretrained-linear_probe-seed0",
        "nall-pretrained-linear_probe-seed0",
    ]
    monkeypatch.undo()
    # the same directory with another experiment is refused
    with pytest.raises(FewShotError, match=r"another configuration \(differs in \['task.head'\]"):
        run_fewshot(_base(train_store, tmp_path, head="mlp"), grid_dir, GRID, pretrained=pretrained)


def test_grid_order_keeps_pairs_together():
    cells = list(
        grid_cells(FewShotGrid(sizes=(20, "all"), modes=("linear_probe", "unfreeze"), seeds=(1, 2)))
    )
    assert (
        len(cells)
        == 16
        == len(FewShotGrid(sizes=(20, "all"), modes=("linear_probe", "unfreeze"), seeds=(1, 2)))
    )
    assert [c[0] for c in cells[:2]] == [
        "n20-scratch-linear_probe-seed1",
        "n20-pretrained-linear_probe-seed1",
    ]
    assert cells[2][0] == "n20-scratch-unfreeze_0.2-seed1"


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(6):
        for size in (10, 20):
            base = rng.normal(0.6, 0.05)
            rows.append(
                {
                    "size": str(size),
                    "n": size,
                    "mode": "full",
                    "seed": seed,
                    "init": "scratch",
                    "status": "ok",
                    "test/auroc": base,
                }
            )
            rows.append(
                {
                    "size": str(size),
                    "n": size,
                    "mode": "full",
                    "seed": seed,
                    "init": "pretrained",
                    "status": "ok",
                    "test/auroc": base + 0.05 + rng.normal(0, 0.01),
                }
            )
    rows.append({**rows[-1], "seed": 99})  # unpaired: ignored
    table = pd.DataFrame(rows)
    out = paired_comparison(table, "test/auroc", by="n")
    assert list(out["group"]) == ["10", "20", "all"] and list(out["n_pairs"]) == [6, 6, 12]
    x = (
        table[(table.init == "pretrained") & (table.seed < 99)]
        .sort_values(["size", "seed"])["test/auroc"]
        .to_numpy()
    )
    y = table[table.init == "scratch"].sort_values(["size", "seed"])["test/auroc"].to_numpy()
    last = out.iloc[-1]
    assert last["wilcoxon_p"] == pytest.approx(stats.wilcoxon(x, y).pvalue)
    assert last["t_p"] == pytest.approx(stats.ttest_rel(x, y).pvalue) and last[
        "mean_diff"
    ] == pytest.approx((x - y).mean())
    assert paired_comparison(table[table.init == "scratch"], "test/auroc").empty
    d = x - y
    t_lo, t_hi = stats.ttest_rel(x, y).confidence_interval(0.95)
    assert (last["diff_ci_low"], last["diff_ci_high"]) == pytest.approx((t_lo, t_hi))
    assert last["effect_dz"] == pytest.approx(d.mean() / d.std(ddof=1))


def test_metrics_by_size_name_each_size_and_the_smallest(tmp_path):
    from swiftlib.training.fewshot import FewShotResult

    rows = []
    for seed in range(5):
        for n, gain in ((10, 0.1 + 0.01 * seed), (40, -0.02 - 0.01 * seed)):
            for init, add in (("scratch", 0.0), ("pretrained", gain)):
                rows.append(
                    {
                        "size": str(n),
                        "n": n,
                        "mode": "full",
                        "seed": seed,
                        "init": init,
                        "status": "ok",
                        "test/auroc": 0.6 + 0.01 * seed + add,
                    }
                )
    m = FewShotResult(tmp_path, pd.DataFrame(rows), "test/auroc").metrics
    assert m["fewshot/n10_pretrained_auroc"] == pytest.approx(0.62 + 0.12)
    assert m["fewshot/n10_scratch_auroc"] == pytest.approx(0.62)
    assert m["fewshot/n40_pretrained_auroc"] == pytest.approx(0.62 - 0.04)
    assert m["fewshot/n10_p_value"] == pytest.approx(0.0625)  # 5 pairs, all positive: 2 / 2**5
    assert m["fewshot/n10_diff_ci_low"] > 0 > m["fewshot/n40_diff_ci_high"]
    assert (m["fewshot/smallest_n"], m["fewshot/smallest_num_pairs"]) == (10, 5)
    assert m["fewshot/smallest_mean_diff"] == pytest.approx(0.12)


@pytest.mark.parametrize(
    "grid, match",
    [
        (dict(sizes=(0, 4)), "sizes"),
        (dict(sizes=()), "sizes"),
        (dict(inits=("imagenet",)), "inits"),
        (dict(modes=("full", "full")), "modes"),
        (dict(seeds=()), "seeds"),
        (dict(unfreeze_fraction=0.0), "unfreeze_fraction"),
    ],
)
def test_bad_grid(grid, match):
    with pytest.raises(FewShotError, match=match):
        FewShotGrid(**grid)


def test_bad_input_is_refused_before_training(train_store, tmp_path, pretrained, no_training):
    base = _base(train_store, tmp_path)
    with pytest.raises(FewShotError, match="no pretrained checkpoint"):
        run_fewshot(base, tmp_path / "g", GRID)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_fewshot(base, tmp_path / "g", GRID, pretrained=tmp_path / "nope.ckpt")
    with pytest.raises(FewShotError, match=r"sizes \[50\] exceed the 8 training participants"):
        run_fewshot(
            base,
            tmp_path / "g",
            FewShotGrid(sizes=(4, 50), inits=("scratch",), modes=("full",), seeds=(0,)),
        )
    with pytest.raises(FewShotError, match="holds model 'swift_v2_test'"):
        run_fewshot(
            _base(train_store, tmp_path, model="swift_v1_test"),
            tmp_path / "g",
            GRID,
            pretrained=pretrained,
        )
    with pytest.raises(FewShotError, match="kind='finetune'"):
        run_fewshot(
            tiny_fit_config(train_store, tmp_path / "p", kind="pretrain"), tmp_path / "g", GRID
        )
    assert not (tmp_path / "g" / "runs").exists()
