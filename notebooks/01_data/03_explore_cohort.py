# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: data
# ---

# %% [markdown]
# # Explore a cohort
#
# **What.** Look at a store before training on it: who is in it (labels, sites), what one
# scan looks like in space (orthogonal views) and in time (voxel time series, carpet plot).
#
# **Why.** Most failed fMRI models fail on data: a site that is all one class, a label that
# is constant, scans that are mostly artefact. Minutes spent here save GPU-days later.

# %%
from pathlib import Path

import plotly.express as px
from IPython.display import display

from swiftlib import notebook as nb
from swiftlib.data.qc import qc_table
from swiftlib.data.store import open_store
from swiftlib.viz import data as viz

print("swiftlib", nb.setup())

# %% tags=["parameters"]
store_path: str = "data/demo/store_synthetic"  # store to explore
subject: str = ""  # subject id to look at; "" for the first one
frame: int = 0  # frame shown in the brain views
coords_mm: dict = {}  # time-series points {name: [x, y, z]} in MNI mm; {} for the synthetic regions
max_subjects: int = 40  # subjects read for the cohort-level coupling plot
run_dir: str = ""  # results.json goes here; swiftlib run fills it in

# %%
store_path = nb.resolve(store_path)
run_dir = nb.run_dir(run_dir, "data")
store = open_store(store_path)
subject = subject or store.subject_ids[0]
has_ground_truth = (Path(store_path) / "ground_truth" / "ground_truth.json").is_file()
coords = ({k: tuple(v) for k, v in coords_mm.items()}
          or (viz.region_centres(store) if has_ground_truth else {}))
store

# %% [markdown]
# ## Who is in the cohort
# Labels with their task type, and subjects per site. A label that differs strongly between
# sites can be "predicted" from the site alone — check before believing a result.

# %%
display(viz.label_table(store))
viz.site_table(store)

# %% [markdown]
# ## Quality control, one row per scan
# `swiftlib preprocess` writes `qc.tsv` beside the store (for a store without one, such as
# the synthetic cohort, the table is computed from the store itself). What the columns mean:
#
# * `subject_id` is one scan, `participant_id` the person: two sessions or runs of one
#   person are two rows with one participant, and splits never separate them.
# * `frames_source`, `tr_source`: length and repetition time (seconds between frames) of the
#   file as acquired; `frames`, `tr`: in the store, after scrubbing removed high-motion
#   frames (`frames_censored`) and after resampling to a common TR (`--target-tr`). A window
#   of 20 frames lasts `20 × tr` seconds.
# * `mean_fd`: mean framewise displacement in mm, from fMRIPrep's confounds table — how far
#   the head moved between consecutive frames. Around 0.1–0.2 mm is typical at rest; above
#   about 0.5 mm scans are often excluded, because motion changes the BOLD signal far more
#   than brain activity does. Empty without a confounds table.
# * `coverage`: the fraction of the MNI152 brain inside the scan's brain mask. A whole-brain
#   scan is near 1; a partial field of view (a few slices, a cut-off cerebellum) or a failed
#   registration gives less, and preprocessing warns below 0.5.
# * `denoise`: the fMRIPrep confound strategy used, if any.

# %%
qc = qc_table(store)
qc.drop(columns=["source"]).round(3)

# %% [markdown]
# Brain coverage per scan (bars), with the 0.5 line below which preprocessing warns. A bar
# far below its neighbours is a scan to look at before it goes into training.

# %%
fig = px.bar(qc, x="subject_id", y="coverage", color="participant_id", height=320,
             title="Fraction of the MNI brain covered, per scan", range_y=[0, 1.05])
fig.add_hline(y=0.5, line_dash="dash", annotation_text="warning threshold")
fig.update_layout(showlegend=False)

# %% [markdown]
# ## One scan in space
# nilearn's orthogonal view of one frame, in MNI coordinates (mm). The crosshair position is
# the centre of the brain; every subject of a store lies on the same grid.

# %%
viz.plot_ortho(store, subject, frame=frame);

# %%
viz.plot_mid_slices(store.read_subject(subject), frame=frame, title=f"{subject}, frame {frame}")

# %% [markdown]
# ## One scan in time
# The BOLD signal at a few points (for the synthetic cohort: the centres of the planted
# regions). Zoom in and hide lines in the legend: for a subject with sex 1, `sex_a` and
# `sex_b` move together.

# %%
ts = viz.voxel_timeseries(store, subject, coords) if coords else None
print(store.subjects.loc[subject].to_dict())
viz.plot_timeseries(ts, title=f"{subject}: BOLD at region centres") if ts is not None else None

# %%
ts.corr().round(2) if ts is not None else None

# %% [markdown]
# ## Carpet plot
# Every brain voxel's time series as one row (time left to right). Vertical stripes through
# all rows are global events (head motion, scanner drift) that a model could latch onto.

# %%
viz.plot_carpet(store, subject)

# %% [markdown]
# ## Is the planted signal visible? (synthetic cohort)
# The correlation between `sex_a` and `sex_b` per subject, split by the label. Two separated
# clouds mean the information is in the data; the model's job is to find it without being
# told where to look.

# %%
subjects = store.subject_ids[:max_subjects] if has_ground_truth else []
coupling = store.subjects.loc[subjects, ["sex", "site"]].assign(
    coupling=[viz.voxel_timeseries(store, s, coords)[["sex_a", "sex_b"]].corr().iloc[0, 1]
              for s in subjects])
px.strip(coupling, x="sex", y="coupling", color="site", title="sex_a–sex_b correlation per subject",
         height=360) if has_ground_truth else None

# %%
means = coupling.groupby("sex")["coupling"].mean() if has_ground_truth else {}
nb.save_results(
    run_dir, "data",
    metrics={"data/num_subjects": len(store), "data/num_sites": store.subjects["site"].nunique(),
             "data/min_coverage": float(qc["coverage"].min()),
             **{f"data/coupling_sex{int(k)}": float(v) for k, v in dict(means).items()}},
    artifacts={"store": store_path},
)
