"""Looking at a cohort: brains (nilearn), time series (plotly), carpet plots and tables.

Every function takes a store (``swiftlib.data.open_store``) or arrays and returns the
figure (nilearn functions return nilearn's display object); ``output_file`` saves it.
Matplotlib is used through figures only (no ``pyplot`` state), so this is headless-safe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "plot_mid_slices",
    "plot_ortho",
    "plot_regions",
    "voxel_timeseries",
    "plot_timeseries",
    "plot_carpet",
    "label_table",
    "site_table",
    "region_centres",
]


def _figure(axes, ncols: int, size=(3.2, 3.2)):
    if axes is not None:
        axes = np.atleast_1d(axes)
        return axes[0].figure, axes
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1]), layout="constrained")
    return fig, np.atleast_1d(fig.subplots(1, ncols))


def _save(fig, output_file):
    if output_file:
        fig.savefig(output_file, dpi=100)
    return fig


def plot_mid_slices(
    volume, frame: int = 0, axes=None, title=None, output_file=None, cmap: str = "gray"
):
    """Sagittal, coronal and axial slices through the middle of ``volume`` ``(D, H, W)`` or
    ``(D, H, W, T)`` (then at ``frame``). Store axes are RAS (D = x, H = y, W = z)."""
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim == 4:
        vol = vol[..., frame]
    if vol.ndim != 3:
        raise ValueError(f"volume has shape {vol.shape}; expected (D, H, W) or (D, H, W, T)")
    D, H, W = vol.shape
    fig, axs = _figure(axes, 3)
    slices = {
        "sagittal (x)": vol[D // 2].T,
        "coronal (y)": vol[:, H // 2].T,
        "axial (z)": vol[:, :, W // 2].T,
    }
    lo, hi = np.percentile(vol, [1, 99.5])
    for ax, (name, img) in zip(axs, slices.items()):
        ax.imshow(img, origin="lower", cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, output_file)


def plot_ortho(
    store, subject_id: str, frame: int = 0, cut_coords=None, title=None, output_file=None, **kwargs
):
    """nilearn orthogonal view of one frame of a subject, in MNI space (world mm)."""
    from nilearn import plotting

    vol = store.read_window(subject_id, start=frame, length=1)[..., 0].astype(np.float32)
    img = store.geometry(subject_id).to_nifti(vol)
    kwargs.setdefault("draw_cross", False)
    return plotting.plot_epi(
        img,
        cut_coords=cut_coords,
        title=title or f"{subject_id}, frame {frame}",
        output_file=output_file,
        **kwargs,
    )


def region_centres(store) -> dict[str, tuple[float, float, float]]:
    """``{region: (x, y, z) mm}`` from the synthetic cohort's ``ground_truth.json``."""
    from swiftlib.utils.io import read_json

    path = Path(store.root) / "ground_truth" / "ground_truth.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: region centres exist for synthetic cohorts only"
        )
    return {k: tuple(v["centre_mm"]) for k, v in read_json(path)["regions"].items()}


def plot_regions(store, title=None, output_file=None, **kwargs):
    """The synthetic cohort's ground-truth regions (``ground_truth/region_*.nii.gz``) as one
    labelled map on the MNI template: where the planted signals live."""
    import nibabel as nib
    from nilearn import plotting

    gt = Path(store.root) / "ground_truth"
    files = sorted(gt.glob("region_*.nii.gz"))
    if not files:
        raise FileNotFoundError(
            f"no region_*.nii.gz under {gt}: ground truth exists for synthetic cohorts only"
        )
    first = nib.load(files[0])
    labels = np.zeros(first.shape, dtype=np.int16)
    for k, f in enumerate(files, start=1):
        labels[np.asarray(nib.load(f).dataobj) > 0] = k
    img = nib.Nifti1Image(labels, first.affine)
    names = ", ".join(f"{k}={f.name[7:-7]}" for k, f in enumerate(files, start=1))
    kwargs.setdefault("draw_cross", False)
    return plotting.plot_roi(
        img, title=title or names, output_file=output_file, cmap="tab10", **kwargs
    )


def voxel_timeseries(store, subject_id: str, coords_mm: dict | None = None):
    """Time series (index: seconds) at world coordinates ``{name: (x, y, z) mm}`` (default:
    the ground-truth region centres of a synthetic cohort), nearest store voxel."""
    import pandas as pd

    coords_mm = coords_mm if coords_mm is not None else region_centres(store)
    data = store.read_subject(subject_id)  # (D, H, W, T) float16
    inv = np.linalg.inv(store.affine)
    cols = {}
    for name, xyz in coords_mm.items():
        ijk = np.rint(inv @ np.array([*xyz, 1.0]))[:3].astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.array(data.shape[:3])):
            raise ValueError(f"{name} at {xyz} mm falls outside the store grid {data.shape[:3]}")
        cols[name] = data[tuple(ijk)].astype(np.float32)
    tr = store.tr(subject_id)
    index = pd.Index(np.arange(data.shape[-1]) * tr, name="time_s")
    return pd.DataFrame(cols, index=index)


def plot_timeseries(df, title=None, output_file=None):
    """One plotly line per column of ``df`` (index = time); hover to read values, click the
    legend to hide a line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for col in df.columns:
        fig.add_trace(go.Scatter(x=df.index, y=df[col], mode="lines", name=str(col)))
    fig.update_layout(
        title=title,
        xaxis_title=df.index.name or "time",
        yaxis_title="signal (z)",
        height=360,
        margin=dict(l=50, r=20, t=50, b=40),
    )
    if output_file:
        fig.write_html(output_file)
    return fig


def plot_carpet(store, subject_id: str, axes=None, title=None, output_file=None):
    """Carpet plot (every brain voxel's time series as one row; nilearn): stripes across
    all rows are global artefacts (motion, drifts), structure within rows is signal."""
    from matplotlib.figure import Figure
    from nilearn import plotting

    geom = store.geometry(subject_id)
    img = geom.to_nifti(store.read_subject(subject_id).astype(np.float32))
    mask = geom.to_nifti(store.mask(subject_id).astype(np.uint8))
    fig = axes.figure if axes is not None else Figure(figsize=(9, 3.5), layout="constrained")
    plotting.plot_carpet(
        img,
        mask_img=mask,
        t_r=store.tr(subject_id),
        figure=fig if axes is None else None,
        axes=axes,
        title=title or f"carpet plot, {subject_id}",
    )
    return _save(fig, output_file)


def label_table(store):
    """One row per label: its task, and class counts or the value range."""
    import pandas as pd

    subjects = store.subjects
    rows = []
    for name, spec in store.labels.items():
        col = subjects[name]
        if spec.get("task") == "classification":
            counts = col.value_counts().sort_index()
            summary = ", ".join(f"{k}: {v}" for k, v in counts.items())
        else:
            summary = (
                f"mean {col.mean():.1f}, sd {col.std():.1f}, range {col.min():.1f}–{col.max():.1f}"
            )
        rows.append(
            {
                "label": name,
                "task": spec.get("task"),
                "num_classes": spec.get("num_classes"),
                "subjects": int(col.notna().sum()),
                "summary": summary,
            }
        )
    return pd.DataFrame(rows).set_index("label")


def site_table(store):
    """Subjects per site, with every label's mean per site (site effects are a confound)."""
    subjects = store.subjects
    labels = [k for k in store.labels if k in subjects]
    table = subjects.groupby("site")[labels].mean().round(2)
    table.insert(0, "subjects", subjects.groupby("site").size())
    return table
