"""swiftlib.viz.tuning: Optuna study figures (with placeholders for too-small studies),
few-shot curves with confidence bands and the paired scatter; written to HTML headless."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest

from swiftlib.viz import tuning as viz


def _study(n: int, two_params: bool = True):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        t = study.ask()
        lr = t.suggest_float("lr", 1e-5, 1e-2, log=True)
        wd = t.suggest_float("weight_decay", 1e-4, 0.3, log=True) if two_params else 0.0
        for epoch in range(3):
            t.report(-abs(np.log10(lr) + 3) + epoch * 0.1 - wd, epoch)
        study.tell(t, -abs(np.log10(lr) + 3) - wd)
    return study


@pytest.mark.parametrize("kind", sorted(viz.STUDY_PLOTS))
def test_plot_study_every_kind(kind, tmp_path):
    out = tmp_path / f"{kind}.html"
    fig = viz.plot_study(_study(6), kind, title=kind, output_file=out)
    assert isinstance(fig, go.Figure) and fig.data and fig.layout.title.text == kind
    assert out.stat().st_size > 1000


def test_plot_study_too_small_gives_a_placeholder_not_an_error():
    empty = optuna.create_study()
    for kind in viz.STUDY_PLOTS:
        fig = viz.plot_study(empty, kind)
        assert "needs" in fig.layout.annotations[0].text
    fig = viz.plot_study(_study(3, two_params=False), "importances")
    assert "2 or more searched parameters" in fig.layout.annotations[0].text
    with pytest.raises(ValueError, match="expected one of"):
        viz.plot_study(empty, "contour")


def _table(seeds=(0, 1, 2)):
    rows = []
    for seed in seeds:
        for n, size in ((4, "4"), (8, "8"), (20, "all")):
            for init, gain in (("scratch", 0.0), ("pretrained", 0.1)):
                for mode in ("linear_probe", "full"):
                    rows.append(
                        {
                            "cell": f"n{size}-{init}-{mode}-seed{seed}",
                            "n": n,
                            "size": size,
                            "init": init,
                            "mode": mode,
                            "seed": seed,
                            "status": "ok",
                            "test/auroc": 0.5 + 0.01 * n + gain + 0.01 * seed,
                        }
                    )
    return pd.DataFrame(rows)


def test_fewshot_curves_have_bands_with_several_seeds(tmp_path):
    fig = viz.plot_fewshot_curves(
        _table(), "test/auroc", title="few-shot", output_file=tmp_path / "c.html"
    )
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(lines) == 4 and len(bands) == 4  # 2 modes x 2 inits
    assert list(lines[0].x) == [4, 8, 20] and (tmp_path / "c.html").exists()
    s = viz.fewshot_summary(_table(), "test/auroc")
    row = s[(s["mode"] == "full") & (s["init"] == "scratch") & (s["n"] == 4)].iloc[0]
    assert (
        row["count"] == 3
        and row["mean"] == pytest.approx(0.55)
        and row["ci_low"] < 0.55 < row["ci_high"]
    )
    one_seed = viz.plot_fewshot_curves(_table(seeds=(0,)), "test/auroc")
    assert not [t for t in one_seed.data if t.fill == "toself"]  # no band from one seed
    assert (
        "no finished runs"
        in viz.plot_fewshot_curves(_table(), "test/r2").layout.annotations[0].text
    )


def test_paired_scatter(tmp_path):
    fig = viz.plot_paired(_table(), "test/auroc", output_file=tmp_path / "p.html")
    points = [t for t in fig.data if t.mode == "markers"]
    assert sum(len(t.x) for t in points) == 18 and all(
        (np.array(t.y) > np.array(t.x)).all() for t in points
    )
    only_scratch = _table()[lambda d: d["init"] == "scratch"]
    assert "no pairs" in viz.plot_paired(only_scratch, "test/auroc").layout.annotations[0].text
