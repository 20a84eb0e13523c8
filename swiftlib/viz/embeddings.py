"""Embeddings in 2D: PCA / UMAP projections as interactive plotly scatters, and an
ipywidgets explorer (colour-by, projection, level, split) that falls back to static
plotly figures when there is no live kernel (papermill, ``swiftlib run``, CI)."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np

__all__ = [
    "PROJECTIONS",
    "StaticFigures",
    "project",
    "plot_embedding",
    "plot_probe_scores",
    "widgets_available",
    "embedding_explorer",
]

log = logging.getLogger(__name__)

PROJECTIONS = ("pca", "umap")
_HOVER = ("subject_id", "participant_id", "site", "dataset", "window_start")


def project(df, method: str = "pca", prefix: str = "emb", seed: int = 0, n_neighbors: int = 15):
    """``(N, 2)`` projection of the embedding columns: PCA (standardised features) or UMAP.
    UMAP's ``n_neighbors`` is capped at N − 1 for small tables."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from swiftlib.interpret.embeddings import embedding_matrix

    if method not in PROJECTIONS:
        raise ValueError(f"method={method!r}: expected one of {PROJECTIONS}")
    X = StandardScaler().fit_transform(embedding_matrix(df, prefix))
    if len(X) < 3:
        raise ValueError(f"{len(X)} rows: a 2D projection needs at least 3")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(X)
    import umap

    # the spectral start needs more points than neighbours
    init = "spectral" if len(X) >= 16 else "random"

    warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
    reducer = umap.UMAP(
        n_components=2, n_neighbors=int(min(n_neighbors, len(X) - 1)), init=init, random_state=seed
    )
    return reducer.fit_transform(X)


def _plot_frame(df, xy, axis: str):
    """The projection plus every non-feature column (for hover and colour)."""
    import pandas as pd

    from swiftlib.interpret.tables import is_feature_column

    plot_df = pd.DataFrame({f"{axis}1": xy[:, 0], f"{axis}2": xy[:, 1]})
    label_cols = [c for c in df.columns if not is_feature_column(c) and c != "num_windows"]
    for c in label_cols:
        plot_df[c] = df[c].to_numpy()
    return plot_df, label_cols


def _as_category(plot_df, color: str) -> None:
    """Integer classes (≤ 10 values) become categories: a legend, not a colour bar."""
    if plot_df[color].dtype.kind in "iub" and plot_df[color].nunique() <= 10:
        plot_df[color] = plot_df[color].astype(str)


def plot_embedding(
    df,
    color: str | list | None = "site",
    method: str = "pca",
    prefix: str = "emb",
    coords=None,
    title=None,
    output_file=None,
    seed: int = 0,
):
    """Plotly scatter of a 2D projection; hover shows subject, site, dataset and every label.

    ``color``: any column (categorical or continuous; None = one colour), or a list of
    columns: one figure with a "colour by" menu that switches between them — it works in the
    standalone HTML and in executed notebooks, no kernel needed. ``coords``: a
    precomputed ``(N, 2)`` projection (skips :func:`project`). ``output_file``: ``.html``
    (interactive) or an image path (needs kaleido).
    """
    import plotly.express as px

    colors = list(color) if isinstance(color, (list, tuple)) else [color]
    for c in colors:
        if c is not None and c not in df.columns:
            raise ValueError(
                f"color={c!r} is not a column of the table; choose one of {list(df.columns)[:12]}…"
            )
    if not colors:
        raise ValueError("color=[]: give a column name, a list of column names, or None")
    xy = project(df, method, prefix, seed) if coords is None else np.asarray(coords)
    axis = {"pca": "PC", "umap": "UMAP "}[method]
    plot_df, label_cols = _plot_frame(df, xy, axis)
    hover = [c for c in label_cols if c in _HOVER or c not in ("dataset",)]
    for c in colors:
        if c is not None:
            _as_category(plot_df, c)

    def scatter(c):
        return px.scatter(plot_df, x=f"{axis}1", y=f"{axis}2", color=c, hover_data=hover)

    def heading(c):
        return title or f"{method.upper()} of {len(df)} embeddings" + (
            f", colour = {c}" if c else ""
        )

    fig = scatter(colors[0])
    if len(colors) > 1:
        fig = _colour_menu(fig, [scatter(c) for c in colors], colors, heading)
    fig.update_layout(title=heading(colors[0]))
    fig.update_traces(marker=dict(size=8, line=dict(width=0.5, color="white")))
    fig.update_layout(height=460, margin=dict(l=40, r=20, t=50, b=40))
    if output_file:
        if str(output_file).endswith(".html"):
            fig.write_html(output_file)
        else:
            fig.write_image(output_file)
    return fig


def _colour_menu(fig, figures, colors, heading):
    """One figure holding every colouring's traces, a dropdown showing one set at a time.
    Continuous colourings get their own colour bar on the trace (plotly express puts them
    on one shared ``coloraxis``, which two continuous columns cannot share)."""
    import plotly.graph_objects as go

    out = go.Figure(layout=fig.layout)
    out.layout.coloraxis = None
    owner = []
    for k, (c, f) in enumerate(zip(colors, figures)):
        scale = f.layout.coloraxis.colorscale if f.layout.coloraxis else None
        for trace in f.data:
            if trace.marker.coloraxis:
                trace.marker.coloraxis = None
                trace.marker.colorscale = scale
                trace.marker.showscale = True
                trace.marker.colorbar = dict(title=str(c))
            trace.visible = k == 0
            trace.legendgroup = f"{c}:{trace.legendgroup}"
            out.add_trace(trace)
            owner.append(k)
    buttons = [
        dict(
            label=str(c),
            method="update",
            args=[
                {"visible": [o == k for o in owner]},
                {"title.text": heading(c), "legend.title.text": str(c)},
            ],
        )
        for k, c in enumerate(colors)
    ]
    out.update_layout(
        updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.15)],
        legend_title_text=str(colors[0]),
    )
    return out


def plot_probe_scores(probes, leakage: dict | None = None, title=None, output_file=None):
    """Bars of :func:`~swiftlib.interpret.embeddings.probe_scores` (chance as a dashed line)
    and, when given, the site-leakage balanced accuracy against its chance level."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for probe, d in probes.groupby("probe"):
        fig.add_trace(
            go.Bar(
                x=[f"{r.label} ({r.metric})" for r in d.itertuples()],
                y=d["score"],
                name=f"{probe} probe",
            )
        )
    if leakage and leakage.get("balanced_acc") == leakage.get("balanced_acc"):  # not NaN
        fig.add_trace(
            go.Bar(
                x=["site (balanced acc)"],
                y=[leakage["balanced_acc"]],
                name="site leakage",
                marker_color="firebrick",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=["site (balanced acc)"],
                y=[leakage["chance"]],
                mode="markers",
                marker=dict(symbol="line-ew-open", size=40, color="black"),
                name="site chance",
            )
        )
    fig.add_hline(y=0.5, line_dash="dash", annotation_text="AUROC chance", line_color="grey")
    fig.update_layout(
        barmode="group",
        title=title or "What the embedding encodes (cross-validated)",
        yaxis_title="score",
        height=380,
        margin=dict(l=40, r=20, t=50, b=40),
    )
    if output_file:
        fig.write_html(output_file)
    return fig


class StaticFigures(list):
    """The headless explorer: a list of plotly figures that a notebook displays one after
    another when it is a cell's result (so executed notebooks and their HTML keep them)."""

    def _ipython_display_(self):
        from IPython.display import display

        for fig in self:
            display(fig)


def widgets_available() -> bool:
    """True when ipywidgets can render: importable and running in a live kernel that has a
    front end (not papermill / nbconvert / plain Python)."""
    if os.environ.get("PAPERMILL_EXECUTION") or os.environ.get("SWIFTLIB_HEADLESS"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    if ip is None or not hasattr(ip, "kernel"):
        return False
    return "papermill" not in str(type(ip)).lower()


def embedding_explorer(
    tables: dict, colors=None, methods=PROJECTIONS, interactive: bool | None = None, seed: int = 0
):
    """An explorer over several embedding tables.

    ``tables``: ``{(level, split): DataFrame}`` (e.g. ``{("subject", "test"): df, ("window",
    "test"): dfw}``). With widgets (a live Jupyter kernel): dropdowns for colour-by,
    projection, level and split above one plotly figure. Headless (papermill, CI,
    ``interactive=False``): a list of static plotly figures, one per (level, split,
    projection), each with a "colour by" menu over ``colors`` (default: site, split and every
    label, :func:`~swiftlib.interpret.tables.colour_columns`) — so executed notebooks keep
    plots a reader can recolour.

    Returns the ``ipywidgets.VBox`` or a :class:`StaticFigures` list.
    """
    if not tables:
        raise ValueError("tables is empty; expected {(level, split): embeddings DataFrame}")
    bad = [k for k in tables if not (isinstance(k, tuple) and len(k) == 2)]
    if bad:
        raise ValueError(
            f"table keys {bad}: expected (level, split) tuples such as ('subject', 'test')"
        )
    first = next(iter(tables.values()))
    from swiftlib.interpret.tables import colour_columns

    colors = list(colors or colour_columns(first))
    interactive = widgets_available() if interactive is None else interactive
    cache: dict = {}

    def figure(level, split, method, color):  # color: a column or a list (menu)
        key = (level, split, method)
        df = tables[(level, split)]
        if key not in cache:
            cache[key] = project(df, method, seed=seed)
        return plot_embedding(
            df,
            color=color,
            method=method,
            coords=cache[key],
            title=f"{method.upper()} · {level} level · {split}"
            + (f" · colour = {color}" if isinstance(color, str) else ""),
        )

    if not interactive:
        log.info("no live widget front end: static figures instead of the explorer")
        return StaticFigures(
            figure(level, split, m, colors if colors else None)
            for (level, split) in tables
            for m in methods
        )

    import ipywidgets as W
    from IPython.display import display

    levels = sorted({k[0] for k in tables})
    splits = sorted({k[1] for k in tables})
    w_color = W.Dropdown(options=colors, description="colour by")
    w_method = W.Dropdown(options=list(methods), description="projection")
    w_level = W.Dropdown(options=levels, description="level")
    w_split = W.Dropdown(options=splits, description="split")
    out = W.Output()  # plotly's FigureWidget needs anywidget; an Output area needs nothing more
    status = W.HTML()

    def refresh(*_):
        key = (w_level.value, w_split.value)
        if key not in tables:
            status.value = f"<i>no table for level={key[0]!r}, split={key[1]!r}</i>"
            return
        status.value = ""
        fig = figure(w_level.value, w_split.value, w_method.value, w_color.value)
        out.clear_output(wait=True)
        with out:
            display(fig)

    for w in (w_color, w_method, w_level, w_split):
        w.observe(refresh, names="value")
    refresh()
    return W.VBox([W.HBox([w_color, w_method]), W.HBox([w_level, w_split]), status, out])
