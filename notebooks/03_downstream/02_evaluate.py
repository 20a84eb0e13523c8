# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
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

# %%
import pandas as pd

from swiftlib import notebook as nb
from swiftlib.training.evaluate import evaluate_checkpoint, metrics_by_group
from swiftlib.viz import training as viz

print("swiftlib", nb.setup())

# %% tags=["parameters"]
checkpoint: str = "papermill_runs/demo/finetune/checkpoints/best.ckpt"  # a fine-tuning checkpoint
split: str = "test"  # test (held-out subjects) or val
store_path: str = ""  # evaluate on this store instead; "" for the one the checkpoint was trained on
splits_dir: str = ""  # split files; "" for the ones the run used
group_by: str = "site"  # subject column for the breakdown table
batch_size: int = 8  # windows per forward pass
accelerator: str = "cpu"  # cpu or gpu
run_dir: str = ""  # results.json goes here; swiftlib run fills it in

# %%
checkpoint = nb.resolve(checkpoint)
run_dir = nb.run_dir(run_dir, "evaluate")

# %%
res = evaluate_checkpoint(checkpoint, split=split, store_path=nb.resolve(store_path) or None,
                          splits_dir=nb.resolve(splits_dir) or None, batch_size=batch_size,
                          accelerator=accelerator)
print(f"{res.config.label} ({res.config.task}), {len(res.predictions)} {split} subjects")
pd.Series(res.metrics, name="value").round(4).to_frame()

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
by_group = metrics_by_group(res, by=group_by)
by_group.round(3)

# %%
predictions_csv = run_dir / f"predictions_{split}.csv"
res.predictions.to_csv(predictions_csv, index=False)
nb.save_results(
    run_dir, "finetune", metrics=res.metrics,
    parameters={"checkpoint": checkpoint, "split": split, "label": res.config.label,
                "task": res.config.task},
    artifacts={"checkpoint": checkpoint, "predictions": predictions_csv},
    extra={"by_" + group_by: by_group.reset_index().to_dict(orient="records")},
)
