# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: finetune
# ---

# %% [markdown]
# # Evaluate a fine-tuned checkpoint
#
# **What.** Score a fine-tuned checkpoint on the held-out test subjects: a metrics table, the
# ROC curve (classification) or predicted-vs-true scatter (regression), and a breakdown by
# site.
#
# **Why.** The test subjects were never used to train or to pick the checkpoint, so this is
# the honest estimate. The per-site table shows whether the model works everywhere or only
# on the sites that dominate training. The checkpoint carries its data configuration (store,
# split file, window length), so the same subjects are evaluated without repeating it.
#
# **Against simple baselines.** A transformer is only worth its cost if it beats what a few
# lines of scikit-learn get from the same subjects. The field's public benchmarks found that
# foundation models often do *not* beat a functional-connectivity baseline, so this notebook
# fits two on the same split and puts their test scores beside the model's.

# %%
import pandas as pd
from IPython.display import display

from swiftlib import notebook as nb
from swiftlib.training import evaluate as ev
from swiftlib.viz import training as viz
from swiftlib.viz.text import round_table

print("swiftlib", nb.setup())

# %% tags=["parameters"]
checkpoint: str = "papermill_runs/demo/finetune/checkpoints/best.ckpt"  # a fine-tuning checkpoint
split: str = "test"  # test (held-out subjects) or val
store_path: str = ""  # evaluate on this store instead; "" for the one the checkpoint was trained on
splits_dir: str = ""  # split files; "" for the ones the run used
group_by: str = "site"  # subject column for the breakdown table
batch_size: int = 8  # windows per forward pass
accelerator: str = "cpu"  # cpu or gpu
baselines: bool = True  # fit the temporal-SD and connectivity baselines on the same split
atlas_path: str = ""  # atlas image (integer labels, MNI) for connectivity; empty: k-means parcels
num_parcels: int = 64  # parcels of the default parcellation (when atlas_path is "")
run_dir: str = ""  # results.json goes here; swiftlib run fills it in

# %%
checkpoint = nb.resolve(checkpoint)
run_dir = nb.run_dir(run_dir, "evaluate")

# %%
res = ev.evaluate_checkpoint(checkpoint, split=split, store_path=nb.resolve(store_path) or None,
                          splits_dir=nb.resolve(splits_dir) or None, batch_size=batch_size,
                          accelerator=accelerator)
print(f"{res.config.label} ({res.config.task}), {len(res.predictions)} {split} subjects")
pd.Series(res.metrics, name="value").round(3).to_frame()

# %% [markdown]
# ## Per-subject predictions
# One row per subject: the averaged output over its windows, the target and the prediction.

# %%
res.predictions.head(10)

# %%
(viz.plot_roc(res.predictions, title=f"{split} ROC (per subject)")
 if res.config.task == "classification"
 else viz.plot_pred_vs_true(res.predictions, color_by=group_by))

# %% [markdown]
# ## By site
# The same metrics within each site. With a handful of test subjects per site these numbers
# are noisy (and AUROC is undefined where a site has one class); on real cohorts a site far
# below the others points at a scanner or protocol difference.

# %%
by_group = ev.metrics_by_group(res, by=group_by)
by_group.round(2)

# %% [markdown]
# ## Simple baselines on the same split
# Two baselines the field uses, fitted on the subjects the model's run learnt from (its
# training subjects, plus the validation subjects that chose its checkpoint) and scored on
# the same test subjects:
#
# * **temporal SD** — how strongly each brain voxel fluctuates over the scan (one number per
#   voxel);
# * **connectivity** — how strongly the average signals of brain parcels move together (one
#   correlation per pair of parcels). Give `atlas_path` for a real atlas; by default the
#   store's brain mask is cut into `num_parcels` compact parcels of equal size (k-means on
#   voxel coordinates: geometry, not anatomy).
#
# Each feeds a penalised logistic regression (classification) or ridge regression
# (regression); the penalty is chosen by cross-validation *inside* the training subjects, and
# an outer cross-validation there (`nested_cv`) tells how stable the baseline is when the test
# set is small. The comparison resamples the test subjects (bootstrap) to show whether the
# difference is larger than their noise.

# %%
comparison = None
if baselines:
    base = ev.fit_split_baselines(res, atlas_img=nb.resolve(atlas_path) or None,
                                  num_parcels=num_parcels)
    comparison = ev.compare_with_baselines(res, base)
    display(round_table(base.scores[["baseline", "metric", "test", "nested_cv", "chance",
                                     "num_features", "num_train", "num_test"]], 2))
    display(round_table(comparison, 2))

# %% [markdown]
# ## What this means
# The run's own numbers, read against chance, against the planted truth (synthetic cohort)
# and against the baselines. A poor score is a finding too: the sentence says what usually
# causes it.

# %%
print(ev.describe_evaluation(res, comparison=comparison))

# %%
predictions_csv = run_dir / f"predictions_{split}.csv"
res.predictions.to_csv(predictions_csv, index=False)
nb.save_results(
    run_dir, "finetune", metrics={**res.metrics, **(base.metrics(split) if baselines else {})},
    parameters={"checkpoint": checkpoint, "split": split, "label": res.config.label,
                "task": res.config.task},
    artifacts={"checkpoint": checkpoint, "predictions": predictions_csv},
    extra={"by_" + group_by: by_group.reset_index().to_dict(orient="records"),
           **({"baselines": comparison.to_dict(orient="records")} if baselines else {})},
)
