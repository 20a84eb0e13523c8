"""Interpretation plots: brain maps (nilearn, Agg), time curves, region bars, the view_img
HTML export, embedding scatters and the widget explorer's headless fallback."""

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from swiftlib.viz import brain, embeddings  # noqa: E402


@pytest.fixture(scope="module")
def map_img():
    aff = np.diag([8.0, 8.0, 8.0, 1.0])
    aff[:3, 3] = [-72, -104, -56]
    data = np.zeros((19, 23, 20), np.float32)
    data[8:11, 6:9, 10:13] = 1.0
    data[5, 5, 5] = -0.5
    return nib.Nifti1Image(data, aff)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    n = 30
    df = pd.DataFrame(
        {
            "subject_id": [f"sub-{i:04d}" for i in range(n)],
            "participant_id": [f"sub-{i:04d}" for i in range(n)],
            "dataset": "synthetic",
            "site": rng.choice(["site-A", "site-B"], n),
            "sex": rng.integers(0, 2, n),
            "age": rng.uniform(45, 80, n),
            "window_start": -1,
            "num_windows": 3,
        }
    )
    for k in range(6):
        df[f"emb_{k}"] = rng.normal(size=n)
    return df


def test_brain_plots_write_files(map_img, tmp_path):
    fig = brain.plot_glass_brain(map_img, title="glass", output_file=tmp_path / "g.png")
    assert fig is not None and (tmp_path / "g.png").stat().st_size > 0
    brain.plot_glass_brain(map_img, signed=True, threshold_percentile=None)
    brain.plot_stat_map(map_img, title="ortho", output_file=tmp_path / "o.png")
    brain.plot_stat_map(map_img, display_mode="z", cut_coords=3, output_file=tmp_path / "z.png")
    assert (tmp_path / "o.png").exists() and (tmp_path / "z.png").exists()
    view = brain.view_img_html(map_img, output_file=tmp_path / "v" / "map.html")
    assert "html" in (tmp_path / "v" / "map.html").read_text()[:2000].lower() and view is not None


def test_time_curves_and_region_bars(tmp_path):
    curves = pd.DataFrame(
        {
            "subject_id": ["a"] * 4 + ["b"] * 4,
            "window_start": 0,
            "frame": list(range(4)) * 2,
            "value": np.arange(8.0),
        }
    )
    fig = brain.plot_time_curves(curves, tr=0.8, title="t", output_file=tmp_path / "t.png")
    assert fig.axes[0].get_xlabel() == "time in window (s)"
    assert len(brain.plot_time_curves(curves, by="subject_id").axes[0].lines) == 2
    with pytest.raises(ValueError, match="lacks column 'frame'"):
        brain.plot_time_curves(curves.drop(columns="frame"))
    regions = pd.DataFrame(
        {"region": ["age", "visual"], "ratio_to_brain": [2.0, 0.9], "mean": [1, 0.4]}
    )
    brain.plot_region_summary(regions, output_file=tmp_path / "r.png")
    with pytest.raises(ValueError, match="value='median'"):
        brain.plot_region_summary(regions, value="median")


def test_embedding_scatter_hover_and_colour(table, tmp_path):
    fig = embeddings.plot_embedding(table, color="sex", output_file=tmp_path / "e.html")
    assert {t.name for t in fig.data} == {"0", "1"}  # classes become categories
    assert "subject_id" in fig.data[0].hovertemplate and "site" in fig.data[0].hovertemplate
    assert (tmp_path / "e.html").exists()
    cont = embeddings.plot_embedding(table, color="age", method="umap")
    assert len(cont.data) == 1 and cont.layout.xaxis.title.text == "UMAP 1"
    with pytest.raises(ValueError, match="color='height' is not a column"):
        embeddings.plot_embedding(table, color="height")
    with pytest.raises(ValueError, match="method='tsne'"):
        embeddings.project(table, "tsne")
    probes = pd.DataFrame(
        {"label": ["sex"], "probe": ["linear"], "metric": ["auroc"], "score": [0.7]}
    )
    assert len(embeddings.plot_probe_scores(probes, {"balanced_acc": 0.6, "chance": 0.5}).data) == 3


def test_explorer_falls_back_to_static_figures_headless(table, monkeypatch):
    monkeypatch.setenv("SWIFTLIB_HEADLESS", "1")
    assert embeddings.widgets_available() is False
    figs = embeddings.embedding_explorer(
        {("subject", "test"): table, ("window", "test"): table}, methods=("pca",)
    )
    assert isinstance(figs, list) and len(figs) == 2  # one static figure per table and projection
    assert all(type(f).__name__ == "Figure" for f in figs)
    monkeypatch.delenv("SWIFTLIB_HEADLESS")
    assert embeddings.widgets_available() is False  # plain pytest: no kernel
    box = embeddings.embedding_explorer(
        {("subject", "test"): table}, interactive=True, methods=("pca",)
    )
    assert type(box).__name__ == "VBox"
    with pytest.raises(ValueError, match="tables is empty"):
        embeddings.embedding_explorer({})
    with pytest.raises(ValueError, match="expected \\(level, split\\) tuples"):
        embeddings.embedding_explorer({"test": table})


def test_embedding_colour_menu_switches_every_label(table, tmp_path):
    table = table.copy()
    table.attrs["labels"] = '{"sex": {"task": "classification"}, "age": {"task": "regression"}}'
    from swiftlib.interpret.tables import colour_columns

    colors = colour_columns(table)
    assert colors == ["site", "sex", "age"]
    fig = embeddings.plot_embedding(table, color=colors, output_file=tmp_path / "menu.html")
    (menu,) = fig.layout.updatemenus
    assert [b.label for b in menu.buttons] == colors
    n_site, n_sex = table.site.nunique(), table.sex.nunique()
    assert len(fig.data) == n_site + n_sex + 1  # one trace per category; age: one, own colour bar
    sex_visible = menu.buttons[1].args[0]["visible"]
    assert sum(sex_visible) == n_sex and sex_visible[n_site] is True
    age = fig.data[-1]
    assert age.marker.showscale and age.marker.colorbar.title.text == "age"
    assert [t.visible for t in fig.data[:n_site]] == [True] * n_site  # site shown first
    # the headless explorer colours by every label too, through the menu
    figs = embeddings.embedding_explorer({("subject", "test"): table}, interactive=False)
    assert all([b.label for b in f.layout.updatemenus[0].buttons] == colors for f in figs)


def test_brain_figures_render_once(map_img):
    """Jupyter's inline backend shows every figure pyplot still holds at the end of a cell,
    and the returned figure again as the cell's result: the plots hand back detached figures
    (one rendering), and leave figures on the caller's axes alone."""
    import matplotlib.pyplot as plt

    plt.close("all")
    curves = pd.DataFrame({"frame": [0, 1, 0, 1], "value": [1.0, 2.0, 3.0, 4.0]})
    regions = pd.DataFrame(
        {"region": ["a", "b"], "ratio_to_brain": [1.4, 0.9], "auroc": [0.7, 0.4]}
    )
    figs = [
        brain.plot_glass_brain(map_img),
        brain.plot_stat_map(map_img),
        brain.plot_stat_map(map_img, display_mode="z", cut_coords=3),
        brain.plot_time_curves(curves),
        brain.plot_region_summary(regions, value="auroc"),
    ]
    assert plt.get_fignums() == []
    assert figs[-1].axes[0].lines[0].get_xdata()[0] == 0.5  # the no-preference line
    assert all(f.axes for f in figs)
    fig, ax = plt.subplots()
    assert brain.plot_time_curves(curves, axes=ax) is fig and plt.get_fignums() == [fig.number]
    plt.close("all")
