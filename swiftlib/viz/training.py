"""Looking at training runs: loss curves (TensorBoard logs), SimMIM reconstructions, ROC
curves and predicted-vs-true scatters of per-subject predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "read_scalars",
    "plot_loss_curves",
    "load_reconstructions",
    "plot_reconstructions",
    "plot_roc",
    "plot_pred_vs_true",
]


def read_scalars(run_dir, tags=None):
    """Every scalar logged to ``<run_dir>/tensorboard`` as a DataFrame
    ``(tag, step, value, wall_time)``, read from the TensorBoard event files."""
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = Path(run_dir) / "tensorboard"
    files = sorted(tb.rglob("events.out.tfevents.*")) if tb.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no TensorBoard event files under {tb}; expected a fit() run directory"
        )
    rows = []
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tags is not None and tag not in tags:
                continue
            rows += [(tag, e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]
    df = pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])
    return (
        df.sort_values(["tag", "step", "wall_time"])
        .drop_duplicates(["tag", "step"], keep="last")
        .reset_index(drop=True)
    )


def plot_loss_curves(scalars, tags=None, title=None, output_file=None):
    """Plotly lines of logged scalars against the optimiser step (``scalars``: a run
    directory or :func:`read_scalars`' DataFrame). Default tags: every loss and ratio."""
    import plotly.graph_objects as go

    df = read_scalars(scalars) if isinstance(scalars, (str, Path)) else scalars
    if tags is None:
        tags = [
            t
            for t in df["tag"].unique()
            if ("loss" in t or "ratio" in t) and not t.endswith("_step")
        ]
    fig = go.Figure()
    for tag in tags:
        d = df[df["tag"] == tag]
        fig.add_trace(go.Scatter(x=d["step"], y=d["value"], mode="lines+markers", name=tag))
    fig.update_layout(
        title=title,
        xaxis_title="optimiser step",
        yaxis_title="value",
        height=380,
        margin=dict(l=50, r=20, t=50, b=40),
    )
    if output_file:
        fig.write_html(output_file)
    return fig


def load_reconstructions(path) -> list[dict]:
    """The validation reconstructions a pretraining run kept (``reconstructions.pt``)."""
    import torch

    p = Path(path)
    p = p / "reconstructions.pt" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} not found; pretraining runs write it after their first validation"
        )
    return torch.load(p, map_location="cpu", weights_only=True)


def plot_reconstructions(
    examples, index: int = 0, num_frames: int = 4, axis: int = 2, title=None, output_file=None
):
    """Rows: input, masked input (what the model saw), reconstruction, |error| on masked
    voxels; columns: ``num_frames`` frames spread over the window. A slice through the
    middle of ``axis`` (0 = sagittal, 1 = coronal, 2 = axial) of example ``index``."""
    from matplotlib.figure import Figure

    ex = examples[index]
    x = ex["input"].float().numpy()  # (D, H, W, T)
    r = ex["reconstruction"].float().numpy()  # (D, H, W, T)
    m = ex["mask"].bool().numpy()  # (D, H, W, T) True = hidden
    if x.ndim != 4 or x.shape != r.shape:
        raise ValueError(
            f"input {x.shape} and reconstruction {r.shape}: expected equal (D, H, W, T) shapes"
        )
    T = x.shape[-1]
    frames = np.unique(np.linspace(0, T - 1, min(num_frames, T)).round().astype(int))
    mid = x.shape[axis] // 2

    def cut(a, t):
        return np.take(a[..., t], mid, axis=axis).T

    lo, hi = np.percentile(x, [1, 99.5])
    fig = Figure(figsize=(2.2 * len(frames), 2.2 * 4), layout="constrained")
    axs = fig.subplots(4, len(frames), squeeze=False)
    for j, t in enumerate(frames):
        masked = np.where(m[..., t], np.nan, x[..., t])
        err = np.where(m[..., t], np.abs(r[..., t] - x[..., t]), np.nan)
        panels = [
            (cut(x, t), "gray", lo, hi),
            (np.take(masked, mid, axis=axis).T, "gray", lo, hi),
            (cut(r, t), "gray", lo, hi),
            (np.take(err, mid, axis=axis).T, "magma", 0, hi - lo),
        ]
        for i, (img, cmap, vmin, vmax) in enumerate(panels):
            ax = axs[i, j]
            ax.imshow(img, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"frame {t}", fontsize=9)
            if j == 0:
                ax.set_ylabel(
                    ("input", "masked input", "reconstruction", "|error| (masked)")[i], fontsize=9
                )
    fig.suptitle(title or f"{ex.get('subject_id', '')}, window start {ex.get('window_start', '')}")
    if output_file:
        fig.savefig(output_file, dpi=100)
    return fig


def plot_roc(predictions, title=None, output_file=None):
    """ROC curve of per-subject predictions (columns ``p1`` and ``target``; binary)."""
    import plotly.graph_objects as go
    from sklearn.metrics import roc_auc_score, roc_curve

    y = predictions["target"].to_numpy().astype(int)
    score = predictions["p1"].to_numpy()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="gray"), name="chance"
        )
    )
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, score)
        auc = roc_auc_score(y, score)
        fig.add_trace(
            go.Scatter(x=fpr, y=tpr, mode="lines+markers", name=f"model (AUROC {auc:.2f})")
        )
    fig.update_layout(
        title=title or "ROC curve (per subject)",
        xaxis_title="false positive rate",
        yaxis_title="true positive rate",
        height=380,
        width=460,
        margin=dict(l=50, r=20, t=50, b=40),
    )
    if output_file:
        fig.write_html(output_file)
    return fig


def plot_pred_vs_true(predictions, color_by=None, title=None, output_file=None):
    """Predicted against true values per subject (regression), with the identity line."""
    import plotly.express as px

    df = predictions
    fig = px.scatter(
        df,
        x="target",
        y="pred",
        color=color_by,
        hover_data=["subject_id"],
        title=title or "predicted vs true (per subject)",
    )
    lo = float(min(df["target"].min(), df["pred"].min()))
    hi = float(max(df["target"].max(), df["pred"].max()))
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(dash="dash", color="gray"))
    fig.update_layout(height=380, width=460, margin=dict(l=50, r=20, t=50, b=40))
    if output_file:
        fig.write_html(output_file)
    return fig
