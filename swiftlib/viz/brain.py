"""Attribution maps on the brain (nilearn) and how attribution moves through a window.

Plot functions follow nilearn: data in, ``axes=None`` (or ``figure``), ``title=None``,
``output_file=None``, the figure returned. Maps are NIfTI images (or paths) in MNI space,
e.g. ``Attributions.to_nifti()``; the background is nilearn's MNI152 template.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "plot_glass_brain",
    "plot_stat_map",
    "plot_time_curves",
    "plot_region_summary",
    "view_img_html",
]


def _headless_backend() -> None:
    import matplotlib

    if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg", force=False)


def _shown_once(fig, created: bool):
    """Detach a figure this module created from pyplot before returning it. Jupyter's inline
    backend shows every open pyplot figure at the end of a cell, and the returned figure is
    shown again as the cell's result: closing it here leaves the one rendering a reader
    expects (the figure stays usable: ``savefig``, ``display``). Figures on axes the caller
    passed are the caller's and stay open."""
    if created:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return fig


def _img(map_img):
    from swiftlib.interpret.attributions import load_map

    return load_map(map_img)


def _threshold(img, percentile: float | None):
    if percentile is None:
        return None
    data = np.abs(np.asarray(img.dataobj, dtype=float))
    vals = data[data > 0]
    return float(np.percentile(vals, percentile)) if vals.size else None


def plot_glass_brain(
    map_img,
    threshold_percentile: float | None = 80.0,
    signed: bool = False,
    axes=None,
    title=None,
    output_file=None,
    **kwargs,
):
    """Glass-brain projection (maximum intensity through the brain) of an attribution map.

    ``threshold_percentile``: hide voxels below this percentile of the non-zero |values|
    (None = no threshold). ``signed``: a two-sided colour map for signed maps.
    """
    _headless_backend()
    import matplotlib.pyplot as plt
    from nilearn import plotting

    img = _img(map_img)
    fig = axes.figure if axes is not None else plt.figure(figsize=(10, 3.6))
    display = plotting.plot_glass_brain(
        img,
        threshold=_threshold(img, threshold_percentile),
        colorbar=True,
        plot_abs=not signed,
        cmap="cold_hot" if signed else "hot",
        figure=fig,
        axes=axes,
        title=title,
        **kwargs,
    )
    if output_file:
        display.savefig(str(output_file))
    return _shown_once(fig, axes is None)


def plot_stat_map(
    map_img,
    display_mode: str = "ortho",
    cut_coords=None,
    threshold_percentile: float | None = 80.0,
    axes=None,
    title=None,
    output_file=None,
    **kwargs,
):
    """The map over the MNI152 template: ``display_mode="ortho"`` (three planes through
    ``cut_coords``, default the map's peak) or ``"mosaic"`` / ``"z"`` / ``"x"`` / ``"y"``
    (slices)."""
    _headless_backend()
    import matplotlib.pyplot as plt
    from nilearn import plotting

    img = _img(map_img)
    if cut_coords is None and display_mode == "ortho":
        data = np.abs(np.asarray(img.dataobj, dtype=float))
        peak = np.unravel_index(np.argmax(data), data.shape)
        cut_coords = tuple((img.affine @ np.array([*peak, 1.0]))[:3])
    fig = (
        axes.figure
        if axes is not None
        else plt.figure(figsize=(11, 3.6 if display_mode != "mosaic" else 8))
    )
    display = plotting.plot_stat_map(
        img,
        display_mode=display_mode,
        cut_coords=cut_coords,
        threshold=_threshold(img, threshold_percentile),
        figure=fig,
        axes=axes,
        title=title,
        **kwargs,
    )
    if output_file:
        display.savefig(str(output_file))
    return _shown_once(fig, axes is None)


def plot_time_curves(
    time_curves,
    by: str | None = None,
    tr: float | None = None,
    axes=None,
    title=None,
    output_file=None,
):
    """Attribution per frame of the window (mean over brain voxels), averaged over windows:
    a line per group of ``by`` (e.g. ``"subject_id"``) or one line with a ±1 SD band.

    ``time_curves``: ``Attributions.time_curves`` (``subject_id, window_start, frame, value``).
    ``tr``: label the x axis in seconds instead of frames.
    """
    _headless_backend()
    import matplotlib.pyplot as plt

    for col in ("frame", "value"):
        if col not in time_curves.columns:
            raise ValueError(f"time_curves lacks column {col!r}; expected Attributions.time_curves")
    created = axes is None
    if created:
        fig, axes = plt.subplots(figsize=(6, 3.2))
    fig = axes.figure
    scale = tr or 1.0
    if by is None:
        g = time_curves.groupby("frame")["value"]
        m, s = g.mean(), g.std().fillna(0)
        x = m.index.to_numpy() * scale
        axes.plot(x, m.to_numpy(), color="C3", lw=2, label="mean over windows")
        axes.fill_between(
            x, (m - s).to_numpy(), (m + s).to_numpy(), color="C3", alpha=0.2, label="±1 SD"
        )
    else:
        for key, d in time_curves.groupby(by):
            m = d.groupby("frame")["value"].mean()
            axes.plot(m.index.to_numpy() * scale, m.to_numpy(), lw=1, label=str(key))
    axes.set_xlabel("time in window (s)" if tr else "frame in window")
    axes.set_ylabel("attribution (brain mean)")
    axes.legend(fontsize=7, loc="best")
    if title:
        axes.set_title(title)
    fig.tight_layout()
    if output_file:
        fig.savefig(output_file, dpi=120)
    return _shown_once(fig, created)


def plot_region_summary(
    table, value: str = "ratio_to_brain", axes=None, title=None, output_file=None
):
    """Horizontal bars of :func:`~swiftlib.interpret.attributions.summarise_by_region`'s table:
    ``value`` = ``ratio_to_brain`` (mean |attribution| in the region ÷ over the brain; the
    dashed line at 1 is the brain average), ``auroc`` (region voxels ranked against the rest
    of the brain; dashed line at 0.5 = no preference), ``mean_abs``, ``mean`` or ``share``.
    A flat map — noise, or a model that learned nothing — has every bar at its line."""
    _headless_backend()
    import matplotlib.pyplot as plt

    if value not in table.columns:
        raise ValueError(
            f"value={value!r} is not a column of the region table ({list(table.columns)})"
        )
    created = axes is None
    if created:
        fig, axes = plt.subplots(figsize=(5.5, 0.35 * len(table) + 1.2))
    fig = axes.figure
    t = table.iloc[::-1]
    axes.barh(t["region"].astype(str), t[value], color="C0")
    reference = {"ratio_to_brain": 1.0, "auroc": 0.5}.get(value)
    if reference is not None:
        axes.axvline(reference, color="k", ls="--", lw=1)
    axes.set_xlabel(
        {
            "ratio_to_brain": "mean |attribution| ÷ brain mean |attribution|",
            "auroc": "AUROC of |attribution|, region vs rest of brain",
        }.get(value, value)
    )
    if title:
        axes.set_title(title)
    fig.tight_layout()
    if output_file:
        fig.savefig(output_file, dpi=120)
    return _shown_once(fig, created)


def view_img_html(
    map_img, output_file=None, threshold_percentile: float | None = 80.0, title=None, **kwargs
):
    """nilearn's interactive ``view_img`` (rotate, click through slices in a browser); written
    to ``output_file`` (``.html``) when given. Returns the ``HTMLDocument``."""
    from nilearn import plotting

    img = _img(map_img)
    with warnings.catch_warnings():  # numpy on nilearn's masked array: noise, not news
        warnings.filterwarnings("ignore", message=".*will ignore the 'mask' of the MaskedArray")
        view = plotting.view_img(
            img, threshold=_threshold(img, threshold_percentile), title=title, **kwargs
        )
    if output_file:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        view.save_as_html(str(output_file))
    return view
