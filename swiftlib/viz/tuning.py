"""Looking at hyper-parameter studies and few-shot grids (plotly; headless-safe).

- :func:`plot_study`: Optuna's own plotly figures (optimisation history, parameter
  importances, parallel coordinates, slices, intermediate values = pruning curves), with a
  readable placeholder instead of an exception when a study has too few trials for one.
- :func:`plot_fewshot_curves`: test metric against the number of training participants,
  one line per init, mean over seeds with a confidence band, one panel per mode.
- :func:`plot_paired`: pretrained vs scratch, one point per (size, mode, seed) pair.
"""

from __future__ import annotations

import logging
import math

__all__ = ["STUDY_PLOTS", "plot_study", "plot_fewshot_curves", "plot_paired", "fewshot_summary"]

log = logging.getLogger(__name__)

#: ``kind`` -> Optuna visualisation function name.
STUDY_PLOTS = {
    "history": "plot_optimization_history",
    "importances": "plot_param_importances",
    "parallel": "plot_parallel_coordinate",
    "slice": "plot_slice",
    "intermediate": "plot_intermediate_values",
}
_COLORS = {"pretrained": "#1f77b4", "scratch": "#d62728"}


def _finish(fig, title, output_file, height=None):
    if title is not None:
        fig.update_layout(title=title)
    if height is not None:
        fig.update_layout(height=height)
    if output_file:
        fig.write_html(str(output_file))
    return fig


def _placeholder(text: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(
        text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=14)
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=260)
    return fig


def plot_study(study, kind: str = "history", params=None, title=None, output_file=None):
    """One of Optuna's plotly visualisations of ``study`` (an ``optuna.Study`` or a
    :class:`swiftlib.training.tune.StudySummary`): ``kind`` in :data:`STUDY_PLOTS`.
    ``params`` restricts parallel-coordinate and slice plots to some parameters."""
    import optuna.visualization as ov

    study = getattr(study, "study", None) or study
    if kind not in STUDY_PLOTS:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(STUDY_PLOTS)}")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    searched = {k for t in complete for k in t.params}
    need = 2 if kind in ("importances", "parallel") else 1
    if len(complete) < need:
        return _finish(
            _placeholder(f"{kind}: needs {need} complete trial(s), the study has {len(complete)}"),
            title,
            output_file,
        )
    if kind == "importances" and len(searched) < 2:
        return _finish(
            _placeholder(
                "importances: needs 2 or more searched parameters, the study has "
                f"{sorted(searched)}"
            ),
            title,
            output_file,
        )
    fn = getattr(ov, STUDY_PLOTS[kind])
    kw = (
        {"params": list(params)}
        if params is not None and kind in ("parallel", "slice", "importances")
        else {}
    )
    try:
        fig = fn(study, **kw)
    except (ValueError, RuntimeError) as e:  # e.g. importances when every value is equal
        log.info("plot_study(%s): %s", kind, e)
        fig = _placeholder(f"{kind}: {e}")
    return _finish(fig, title, output_file)


def _ci_halfwidth(values, ci: float) -> float:
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + ci / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def fewshot_summary(table, metric: str, ci: float = 0.95):
    """Mean, SD, count and the ``ci`` t-interval half-width over seeds per (mode, init, n)."""
    import pandas as pd

    cols = ["mode", "init", "n", "size", "mean", "sd", "count", "ci_low", "ci_high"]
    if table is None or len(table) == 0 or metric not in table:
        return pd.DataFrame(columns=cols)
    ok = table[(table["status"] == "ok") & table[metric].notna()]
    rows = []
    for (mode, init, n, size), g in ok.groupby(["mode", "init", "n", "size"], sort=True):
        vals = g[metric].to_numpy(float)
        half = _ci_halfwidth(vals, ci)
        mean = float(vals.mean())
        rows.append(
            [
                mode,
                init,
                n,
                size,
                mean,
                float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                len(vals),
                mean - half,
                mean + half,
            ]
        )
    return pd.DataFrame(rows, columns=cols)


def plot_fewshot_curves(
    table, metric: str, ci: float = 0.95, log_x: bool = True, title=None, output_file=None
):
    """Few-shot curves: ``metric`` (e.g. ``test/auroc``) against training participants,
    mean over seeds with a ``ci`` t-interval band (shown with two or more seeds), one line
    per init and one panel per mode. ``table``:
    :class:`~swiftlib.training.fewshot.FewShotResult`'s."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    summary = fewshot_summary(getattr(table, "table", table), metric, ci)
    if summary.empty:
        return _finish(_placeholder(f"no finished runs with {metric}"), title, output_file)
    modes = list(dict.fromkeys(summary["mode"]))
    fig = make_subplots(rows=1, cols=len(modes), subplot_titles=modes, shared_yaxes=True)
    for j, mode in enumerate(modes, start=1):
        for init in sorted(summary["init"].unique()):
            d = summary[(summary["mode"] == mode) & (summary["init"] == init)].sort_values("n")
            if d.empty:
                continue
            color = _COLORS.get(init, "#555555")
            band = d.dropna(subset=["ci_low"])
            if len(band):
                fig.add_trace(
                    go.Scatter(
                        x=list(band["n"]) + list(band["n"])[::-1],
                        y=list(band["ci_high"]) + list(band["ci_low"])[::-1],
                        fill="toself",
                        fillcolor=color,
                        opacity=0.18,
                        line=dict(width=0),
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=init,
                    ),
                    row=1,
                    col=j,
                )
            fig.add_trace(
                go.Scatter(
                    x=d["n"],
                    y=d["mean"],
                    mode="lines+markers",
                    name=init,
                    legendgroup=init,
                    showlegend=j == 1,
                    line=dict(color=color),
                    customdata=d[["count", "size"]].to_numpy(),
                    hovertemplate=(
                        "n %{x} (%{customdata[1]})<br>mean %{y:.3f}<br>"
                        "seeds %{customdata[0]}<extra>" + init + "</extra>"
                    ),
                ),
                row=1,
                col=j,
            )
        fig.update_xaxes(
            title_text="training participants", type="log" if log_x else "linear", row=1, col=j
        )
    fig.update_yaxes(title_text=f"{metric} (mean, {int(ci * 100)}% CI over seeds)", row=1, col=1)
    fig.update_layout(margin=dict(l=60, r=20, t=60, b=50), legend_title_text="init")
    return _finish(fig, title, output_file, height=400)


def plot_paired(
    table, metric: str, a: str = "pretrained", b: str = "scratch", title=None, output_file=None
):
    """``a`` against ``b`` for each pair (same size, mode and seed): points above the
    diagonal are pairs where ``a`` scored higher. Colour = mode; hover names the cell."""
    import plotly.graph_objects as go

    table = getattr(table, "table", table)
    if table is None or len(table) == 0 or metric not in table:
        return _finish(_placeholder(f"no finished runs with {metric}"), title, output_file)
    ok = table[(table["status"] == "ok") & table[metric].notna()]
    wide = ok.pivot_table(
        index=["size", "n", "mode", "seed"], columns="init", values=metric, aggfunc="first"
    )
    if a not in wide or b not in wide:
        return _finish(
            _placeholder(f"no pairs: needs both {a!r} and {b!r} runs"), title, output_file
        )
    wide = wide[[a, b]].dropna().reset_index()
    fig = go.Figure()
    for mode, g in wide.groupby("mode", sort=False):
        fig.add_trace(
            go.Scatter(
                x=g[b],
                y=g[a],
                mode="markers",
                name=str(mode),
                marker=dict(size=9),
                text=[f"n {s}, seed {sd}" for s, sd in zip(g["size"], g["seed"], strict=True)],
                hovertemplate=f"%{{text}}<br>{b} %{{x:.3f}}<br>{a} %{{y:.3f}}<extra>{mode}</extra>",
            )
        )
    lo = float(min(wide[a].min(), wide[b].min()))
    hi = float(max(wide[a].max(), wide[b].max()))
    pad = 0.05 * (hi - lo or 1.0)
    fig.add_trace(
        go.Scatter(
            x=[lo - pad, hi + pad],
            y=[lo - pad, hi + pad],
            mode="lines",
            name="equal",
            line=dict(color="grey", dash="dash"),
        )
    )
    fig.update_layout(
        xaxis_title=f"{b}: {metric}",
        yaxis_title=f"{a}: {metric}",
        legend_title_text="mode",
        margin=dict(l=60, r=20, t=50, b=50),
    )
    return _finish(fig, title, output_file, height=420)
