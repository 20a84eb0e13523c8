# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: attribute
# ---

# %% [markdown]
# # Brain attributions
#
# **What.** An *attribution map* says, voxel by voxel, how much the input contributed to the
# model's prediction for one subject. We compute it for every window of a few subjects,
# average over time and windows, and put the result back into MNI space as a NIfTI image.
#
# **Integrated Gradients (IG)** (Sundararajan et al., 2017) walks in `n_steps` from a
# *baseline* input to the real input and adds up the gradients along the way; the
# attributions of all voxels sum to the change of the output between baseline and input. The
# default baseline here is each voxel's *mean over the window* ("no fluctuation"): the
# synthetic labels live in the dynamics (amplitude, connectivity), not in the static anatomy.
# `baseline="background"` (every voxel at the out-of-brain value, "no brain at all") is the
# library default for anatomy-like questions. *Saliency* is the plain gradient,
# *gradient × input* its product with the input, *occlusion* hides blocks of voxels and
# watches the output drop, and *IG + SmoothGrad²* averages IG over noisy copies.
#
# **How to read the maps.** With `aggregate="signed"` (default) positive voxels push the
# output up consistently across windows and subjects, and effects whose sign changes from
# window to window cancel; with `aggregate="abs"` bright voxels are where the output is
# sensitive in either direction — which, for methods that multiply by the input, also lights
# up wherever the *input* is strong. A map is *not* a statistical test and can be
# confidently wrong, which is why the notebook ends with **sanity checks**:
#
# 1. *planted-region recovery* — on the synthetic cohort we know which regions carry the
#    label's signal; the voxel-wise AUROC of the map against that mask (1 = every planted voxel
#    ranks above every other brain voxel, 0.5 = no preference);
# 2. *model randomisation* (Adebayo et al., 2018) — the same method on a model with random
#    weights. If the map barely changes, it shows the input (e.g. where the signal is strong),
#    not what the model learned: the recovery AUROC of the random model must fall to ≈ 0.5.

# %%
from IPython.display import display

from swiftlib import notebook as nb
from swiftlib.data import open_store
from swiftlib.interpret import attributions as attr
from swiftlib.interpret.embeddings import resolve_split
from swiftlib.viz import brain as viz
from swiftlib.viz.text import format_score, round_table

print("swiftlib", nb.setup())

# %% tags=["parameters"]
checkpoint: str = "papermill_runs/demo/finetune/checkpoints/best.ckpt"  # a fine-tuning checkpoint
store_path: str = "data/demo/store_synthetic"  # store (must satisfy the checkpoint's contract)
split: str = "test"  # subjects to explain: test, val, train or all
num_subjects: int = 4  # first N subjects of the split
windows_per_subject: int = 1  # windows per subject, evenly spaced; 0 for all
method: str = "ig"  # ig, ig_smoothgrad_sq, saliency, smoothgrad, grad_x_input or occlusion
baseline: str = "temporal_mean"  # temporal_mean, background or a number such as 0.0
aggregate: str = "signed"  # signed (consistent direction) or abs (where the model looks at all)
n_steps: int = 16  # IG integration steps
internal_batch_size: int = 8  # IG steps per forward pass (memory)
sanity_checks: bool = True  # model randomisation + planted-region recovery (synthetic cohort)
atlas_path: str = ""  # optional atlas (integer labels, MNI, the map's grid) for a region table
space: str = "source"  # maps on the subjects' source grid (resampled if needed) or "store"
device: str = "cpu"  # cpu, cuda or auto
run_dir: str = ""  # maps, HTML and results.json go here; swiftlib run fills it in

# %%
checkpoint = nb.resolve(checkpoint)
store_path = nb.resolve(store_path)
run_dir = nb.run_dir(run_dir, "attribute")
store = open_store(store_path)
subjects = resolve_split(store, split, checkpoint)[:num_subjects]
baseline_value = nb.number_or_word(baseline)  # "0.0", "1e-3" -> a number; a name stays a name
settings = dict(method=method, baseline=baseline_value, aggregate=aggregate, n_steps=n_steps,
                internal_batch_size=internal_batch_size, windows=windows_per_subject or None,
                device=device)
print(subjects)

# %% [markdown]
# ## Attribute
# Each window gives a map shaped like the input, `(D, H, W, T)`; the maps are averaged over
# frames and windows per subject, then over subjects (and per target class). `space="source"`
# writes the maps on the grid of the subjects' own NIfTI files (exactly, or resampled with
# nilearn when the store had to resample them); `space="store"` keeps the store's MNI grid
# (`attribution_space.json` beside the maps says which).

# %%
result = attr.attribute(checkpoint, store, subjects, **settings)
paths = result.save(run_dir / "maps", space=space)
group_img = result.to_nifti("group", space=space)
print(f"{result.params['num_windows']} windows; label {result.params['label']!r}; "
      f"predictions {result.predictions}")

# %% [markdown]
# ## Where the model looks
# Glass brain: the maximum through the brain along each axis. Stat map: three planes through
# the peak, over the MNI152 template. Only the top 20 % of voxels are coloured.

# %%
viz.plot_glass_brain(group_img, signed=aggregate == "signed",
                     title=f"{method} ({aggregate}), {len(subjects)} subjects")

# %%
viz.plot_stat_map(group_img, title="peak of the group map")

# %%
viz.plot_stat_map(group_img, display_mode="z", cut_coords=6, title="axial slices")

# %% [markdown]
# ## Through time
# Mean attribution per frame of the window: does the model rely on some frames (e.g. the
# window's edges, where shifted windows wrap) more than others?

# %%
viz.plot_time_curves(result.time_curves, tr=store.tr(subjects[0]),
                     title="attribution over the window")

# %% [markdown]
# ## By region
# The ground-truth regions of the synthetic cohort, scored on the map's *magnitude* |a|:
# `ratio_to_brain` is the region's mean |a| divided by the whole brain's (above 1: the map is
# stronger there than on average), `auroc` ranks the region's voxels against the rest of the
# brain (0.5 = no preference). Magnitudes, because a signed map's brain-wide mean is close to
# zero — a ratio to it would turn noise into a huge "enrichment". A **flat map** — noise, or
# a model that learned nothing about the label — has every bar at its dashed line: nothing
# stands out. Give `atlas_path` for any atlas image in MNI space on the same grid (other
# grids are refused rather than silently resampled).

# %%
gt = attr.ground_truth(store)
regions = attr.summarise_by_region(group_img, gt["regions"], mask_img=gt["brain_mask"])
atlas_table = (attr.summarise_by_region(group_img, nb.resolve(atlas_path),
                                        mask_img=gt["brain_mask"]) if atlas_path else None)
display(round_table(regions, 2))
viz.plot_region_summary(regions, title="attribution by ground-truth region")

# %% [markdown]
# ## Sanity checks
# Recovery of the checkpoint's label's planted regions, the same on a randomised copy of the
# model, and the preference for planted over unlabelled network regions (≈ 0.5 = none).

# %%
label = result.params["label"]
checks = {}
if sanity_checks and attr.ground_truth_mask(store, label).any():
    randomised = attr.attribute(attr.randomised_model(checkpoint, device=device), store, subjects,
                                **settings)
    checks = {"trained_auroc": attr.recovery_auroc(group_img, store, label),
              "randomised_auroc": attr.recovery_auroc(randomised.to_nifti("group"), store, label),
              "trained_preference": attr.region_preference(group_img, store, [label])}
elif sanity_checks:
    checks = {"planted_preference": attr.region_preference(group_img, store)}
print({k: format_score(v) for k, v in checks.items()})

# %% [markdown]
# ## What this means
# The sanity checks above, read as a sentence: does the map point at the planted truth, and
# does it depend on what the model learned (a randomised model's map must be flat)?

# %%
print(attr.describe_sanity_checks(checks, label) if checks else
      "No sanity checks: set sanity_checks=True on a synthetic cohort to read the map against "
      "the planted truth.")

# %%
html_path = run_dir / "attribution_view.html"
viz.view_img_html(group_img, output_file=html_path, title=f"{method} attribution ({label})")

# %%
regions.to_csv(run_dir / "regions.csv", index=False)
nb.save_results(
    run_dir, "attribute", metrics={f"{split}/{k}": v for k, v in checks.items()},
    parameters={"checkpoint": checkpoint, "store_path": store_path, "subjects": subjects,
                **settings},
    artifacts={"group_map": paths["group"], "time_curves": paths["time_curves"],
               "regions": run_dir / "regions.csv", "html": html_path, "checkpoint": checkpoint},
    notebook="notebooks/04_interpret/02_brain_attributions.ipynb",
)
