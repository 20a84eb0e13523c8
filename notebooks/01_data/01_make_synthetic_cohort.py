# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
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
out_dir: str = "data/demo/store_synthetic"  # store to create (a rerun resumes)
num_subjects: int = 40  # subjects (at least 4)
num_frames: int = 60  # frames (volumes) per scan
voxel_size: float = 4.0  # mm; 4 gives a 48³ grid (CPU), 2 the real SwiFT 96³
tr: float = 0.8  # repetition time in seconds
num_sites: int = 3  # scanner sites (1 to 5)
seed: int = 0  # random seed; the cohort is reproducible bit for bit
export_nifti_dir: str = "data/demo/synthetic_bids"  # also export BIDS-like NIfTI here; "" for none
export_subjects: int = 8  # subjects exported as NIfTI (NIfTI is bulky)
run_dir: str = ""  # results.json goes here; swiftlib run fills it in

# %%
out_dir = nb.resolve(out_dir)
export_nifti_dir = nb.resolve(export_nifti_dir) or None
run_dir = nb.run_dir(run_dir, "data")
config = SyntheticConfig(num_subjects=num_subjects, num_frames=num_frames, voxel_size=voxel_size,
                         tr=tr, num_sites=num_sites, seed=seed)
config

# %% [markdown]
# ## Generate
# Each subject gets a smooth baseline, seven brain regions driven by slow (0.01–0.1 Hz)
# fluctuations, noise, and a scanner-site intensity. Three labels are planted:
#
# | label | what differs between subjects |
# |---|---|
# | `sex` | left and right motor cortex fluctuate *together* (r = 0.9) for sex 1, apart for 0 |
# | `age` | the fluctuation *amplitude* of the precuneus grows with age |
# | `null_label` | nothing — a negative control: any model "predicting" it is fooling us |
#
# The store holds one compressed HDF5 file per subject (16-bit floats) plus `subjects.csv`,
# a checksummed `manifest.json`, and `ground_truth/` with the region masks.

# %%
store = make_synthetic_cohort(out_dir, config=config, export_nifti=export_nifti_dir,
                              export_subjects=export_subjects)
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
# Three slices through the middle of the grid. The background is constant (the in-brain
# minimum after z-scoring), so models see only the brain's structure.

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
