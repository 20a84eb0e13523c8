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
# # Make the synthetic cohort
#
# **What.** A cohort of simulated resting-state fMRI scans with *known* answers, written as a
# swiftlib *subject store* — the format every later notebook reads.
#
# **Why.** Real cohorts (UKB, ABCD, HCP) need data-access agreements and GPUs. A synthetic
# cohort runs anywhere in a minute, and because we planted the signals ourselves we can check
# that a model finds them — and finds nothing where nothing was planted.
#
# **fMRI in one paragraph.** An fMRI scan is a *4D* image: a 3D volume of the brain's BOLD
# signal (blood oxygenation, a slow proxy for neural activity) recorded every *TR* seconds
# (here 0.8 s). Scans are registered to a standard brain template (*MNI space*) so that a voxel
# means the same place in every subject. SwiFT models read these 4D volumes directly, without
# first averaging them into regions.

# %%
from IPython.display import display

from swiftlib import notebook as nb
from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort
from swiftlib.viz import data as viz

print("swiftlib", nb.setup())

# %% [markdown]
# ## Parameters
# Defaults build the demo cohort (40 subjects, 4 mm voxels → a 48×48×48 grid, 60 frames).
# `voxel_size: 2.0` gives the real SwiFT layout (96³), much larger on disk.

# %% tags=["parameters"]
out_dir: str = "data/demo/store_synthetic"  # store to create (same settings: a rerun resumes)
overwrite: bool = False  # make the store again when it holds a cohort of other settings
num_subjects: int = 136  # subjects (at least 4); 136 leaves 20 for the test split
num_frames: int = 90  # frames (volumes) per scan
voxel_size: float = 8.0  # mm; 8 gives a 24³ grid (the CPU demo), 4 a 48³, 2 the real SwiFT 96³
tr: float = 0.8  # repetition time in seconds
num_sites: int = 3  # scanner sites (1 to 5)
normalisation: str = "psc"  # psc (percent signal change per voxel) or zscore_global (SwiFT's)
baseline_coupling: float = -0.9  # sex-0 motor coupling (sex 1: 0.9); 0.0 is a subtler effect
seed: int = 0  # random seed; the cohort is reproducible bit for bit
export_nifti_dir: str = "data/demo/synthetic_bids"  # also export BIDS-like NIfTI here; "" for none
export_subjects: int = 8  # subjects exported as NIfTI (NIfTI is bulky)
run_dir: str = ""  # results.json goes here; swiftlib run fills it in

# %%
out_dir = nb.resolve(out_dir)
export_nifti_dir = nb.resolve(export_nifti_dir) or None
run_dir = nb.run_dir(run_dir, "data")
config = SyntheticConfig(num_subjects=num_subjects, num_frames=num_frames, voxel_size=voxel_size,
                         tr=tr, num_sites=num_sites, normalisation=normalisation,
                         baseline_coupling=baseline_coupling, seed=seed)
config

# %% [markdown]
# ### Why these defaults (the CPU demo recipe)
# They are the measured settings with which the demo's small SwiFT finds the planted `sex`
# signal in a few minutes on 2 CPU cores (docs/notebooks.md, "The demo recipe"):
# **8 mm voxels** (24³ grid: 8× fewer voxels than 4 mm, so the cohort, every window read and
# the attribution maps are cheap); **percent signal change** input (under a global z-score
# the ±25 % anatomy dwarfs the 3 % BOLD fluctuation that carries the signal); **coupling
# ±0.9** (a clear connectivity difference that 95 training subjects can learn without
# memorising them); **136 subjects × 90 frames** (20 test subjects; 90 frames give each
# 60-frame window 31 possible starts, so training rarely sees the same window twice).
# For a subtler effect set `baseline_coupling: 0.0`; for SwiFT's own input `zscore_global`.

# %% [markdown]
# ## Generate
# Each subject gets a smooth baseline, seven brain regions driven by slow (0.01–0.1 Hz)
# fluctuations, noise, and a scanner-site intensity. Three labels are planted:
#
# | label | what differs between subjects |
# |---|---|
# | `sex` | motor cortices fluctuate together (r = 0.9) for sex 1, in opposition (−0.9) for 0 |
# | `age` | the fluctuation *amplitude* of the precuneus grows with age |
# | `null_label` | nothing — a negative control: any model "predicting" it is fooling us |
#
# The store holds one HDF5 file per subject (its brain voxels as 16-bit floats), `subjects.csv`,
# a checksummed `manifest.json`, and `ground_truth/` with the region masks.

# %%
store = make_synthetic_cohort(out_dir, config=config, export_nifti=export_nifti_dir,
                              export_subjects=export_subjects, overwrite=overwrite)
summary = store.summary()
summary

# %% [markdown]
# ## The subjects table and the labels
# One row per scan: `subject_id` (the scan), `participant_id` (the person — splits group by
# it so nobody is in both training and test), `dataset`, `site` and the labels.

# %%
display(store.subjects.head())
viz.label_table(store)

# %% [markdown]
# ## Where the signals are
# The ground-truth regions on the MNI template. `sex_a`/`sex_b` carry the sex signal,
# `age` the age signal; the others are background networks shared by everyone.

# %%
viz.plot_regions(store);

# %% [markdown]
# ## One frame of one subject
# Three slices through the middle of the grid. The background outside the brain is constant,
# so models see only the brain. With `normalisation="psc"` each voxel is its percent change
# from its own mean, so the picture is the BOLD fluctuation, not the anatomy.

# %%
subject = store.subject_ids[0]
viz.plot_mid_slices(store.read_window(subject, start=0, length=1), title=f"{subject}, frame 0")

# %%
nb.save_results(
    run_dir, "data",
    metrics={"data/num_subjects": len(store), "data/size_mb": summary["bytes_on_disk"] / 1e6,
             "data/num_exported": export_subjects if export_nifti_dir else 0},
    parameters=config.__dict__,
    artifacts={"store": out_dir, "ground_truth": f"{out_dir}/ground_truth",
               "nifti_export": export_nifti_dir},
)
