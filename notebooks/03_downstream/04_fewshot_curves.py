# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: fewshot
# ---

# %% [markdown]
# # Few-shot curves: does pretraining help when labels are scarce?
#
# **What.** Fine-tune on training subsets of growing size (e.g. 8, 16, all participants),
# once from **scratch** and once from a **pretrained** (SimMIM) encoder, in each fine-tuning
# **mode**, for several **seeds**; plot the test metric against the subset size.
#
# **Why.** Self-supervised pretraining is meant to pay off most when labelled subjects are
# few: the curves show where (and whether) the pretrained encoder beats scratch, and where
# they meet. This is the headline downstream experiment of SwiFT v2.
#
# **Fair comparison.** For one seed, the subset of a given size holds the *same* participants
# for both inits (subsets are nested: the 8 lie inside the 16), and the training seed is the
# same too, so each pretrained run has a scratch twin. The comparison is therefore *paired*:
# the Wilcoxon signed-rank test (no normality assumption) and the paired t test on the
# pretrained − scratch differences, reported with the number of pairs n and the p-value.
# The band around each curve is a 95 % t-interval over seeds.
#
# **Resuming.** Every cell is a run directory under `GRID_DIR/runs/`; running the notebook
# again skips cells that finished, so a grid can grow (more seeds, more sizes) or survive a
# crash.

# %%
from pathlib import Path

from swiftlib import notebook as nb
from swiftlib.demo import explain
from swiftlib.training.fewshot import FewShotGrid, run_fewshot
from swiftlib.viz import tuning as viz

print("swiftlib", nb.setup())

# %% [markdown]
# ## Parameters
# The defaults (2 sizes × 2 inits × linear probe × 2 seeds = 8 short runs) take a few
# minutes on the CPU demo cohort. A real grid: `sizes: [20, 50, 100, "all"]`,
# `modes: ["linear_probe", "unfreeze", "full"]`, `seeds: [0, 1, 2, 3, 4]`.

# %% tags=["parameters"]
store_path: str = "data/demo/store_synthetic"  # store with the label
splits_dir: str = "data/demo/splits"  # split files (as pretraining: test subjects stay unseen)
label: str = "sex"  # label to predict
task: str = "auto"  # auto (as the store declares the label), classification or regression
pretrained: str = "papermill_runs/demo/pretrain/checkpoints/best.ckpt"  # the pretrained encoder
model: str = "swift_v2_5m"  # encoder preset; must match the checkpoint
model_overrides: dict = {"patch_size": [6, 6, 6, 2], "depths": [1, 1, 1], "num_heads": [2, 4, 8], "embed_dim": 24, "drop_path_rate": 0.0, "layer_scale_init": 0.0}  # as in the checkpoint  # noqa: E501
sizes: list = [10, 20]  # training participants per run; "all" for the whole training split
inits: list = ["scratch", "pretrained"]  # encoder initialisations to compare
modes: list = ["linear_probe"]  # fine-tuning modes (linear_probe, unfreeze, full)
unfreeze_fraction: float = 0.2  # mode unfreeze: top fraction of the encoder that trains
seeds: list = [0, 1, 2]  # seeds: each draws its own nested subsets and training seed
sequence_length: int = 20  # frames per window (read every stride_within_seq-th frame)
stride_within_seq: int = 3  # frame step inside a window (3: 20 frames span 60, 48 s)
stride_between_seq: float = 0.01  # training window starts, in windows; 0.01: any frame
windows_per_subject: int = 4  # training windows per subject and epoch; 0 for every window
eval_stride_between_seq: float = 1.0  # val/test window step in windows; 1 back to back
batch_size: int = 8  # global batch size
lr: float = 0.001  # peak learning rate
max_epochs: int = 3  # epochs per run
max_steps: int = -1  # optimiser steps per run; -1 for no limit
metric: str = ""  # test metric of the curves; "" for the monitored one (test/auroc or test/r2)
grid_dir: str = ""  # run directories and the table go here; "" for run_dir (a rerun resumes)
accelerator: str = "cpu"  # cpu, gpu or auto
precision: str = "32-true"  # 32-true, bf16-mixed or 16-mixed
num_workers: int = 0  # DataLoader worker processes
pin_memory: bool = False  # page-locked batches for faster copies to the GPU; true on GPUs
enable_progress_bar: bool = False  # Lightning progress bar per run
run_dir: str = ""  # plots and results.json go here; swiftlib run fills it in

# %%
run_dir = nb.run_dir(run_dir, "fewshot")
grid_dir = Path(nb.resolve(grid_dir)) if grid_dir else run_dir
grid = FewShotGrid(sizes=tuple(sizes), inits=tuple(inits), modes=tuple(modes), seeds=tuple(seeds),
                   unfreeze_fraction=unfreeze_fraction)
base = nb.fit_config(
    "finetune", grid_dir, store_path=store_path, splits_dir=splits_dir, label=label, task=task,
    model=model, model_overrides=model_overrides, sequence_length=sequence_length,
    stride_within_seq=stride_within_seq, stride_between_seq=stride_between_seq,
    windows_per_subject=windows_per_subject, eval_stride_between_seq=eval_stride_between_seq,
    batch_size=batch_size, lr=lr, max_epochs=max_epochs, max_steps=max_steps,
    accelerator=accelerator, precision=precision, num_workers=num_workers, pin_memory=pin_memory,
    enable_progress_bar=enable_progress_bar,
)
print(f"{len(grid)} runs: sizes {grid.sizes} x inits {grid.inits} x modes {grid.modes} "
      f"x seeds {grid.seeds}")

# %% [markdown]
# ## Run the grid
# Cells run in pairs (scratch, then pretrained, for the same subset and seed); finished
# cells are skipped. Each run picks its best epoch on validation and reports the test split.

# %%
res = run_fewshot(base, grid_dir, grid, pretrained=nb.resolve(pretrained) or None,
                  metric=metric or None)
print(f"ran {len(res.ran)}, finished before {len(res.skipped)}, failed {len(res.failed)}; "
      f"metric {res.metric}")
res.table[["cell", "n", "init", "mode", "seed", "status", res.metric]].round(4)

# %% [markdown]
# ## The curves
# Mean test metric over seeds against the number of training participants (log scale), with
# the 95 % interval over seeds; one panel per mode. Pretrained above scratch at small sizes is
# what pretraining is for; at the full size the two often meet.

# %%
viz.plot_fewshot_curves(res.table, res.metric, title=f"few-shot curves: {label}")

# %% [markdown]
# ## Paired comparison
# Each point is one pair (same participants, same seed): above the diagonal, the pretrained
# encoder did better. The table gives, per mode and over everything, the number of pairs,
# the mean difference and the two-sided p-values of the Wilcoxon signed-rank and paired t
# tests. With few pairs (the CPU defaults have 4) no test can reach significance: the
# smallest possible Wilcoxon p with n pairs is 2 / 2ⁿ — plan seeds × sizes accordingly.

# %%
viz.plot_paired(res.table, res.metric, title="pretrained vs scratch (one point per pair)")

# %%
paired = res.paired(by="mode")
paired.round(4)

# %% [markdown]
# ## What the result means
# The smallest training size in a sentence: is the pretrained encoder ahead of random
# initialisation when labels are few, and how sure can we be with this many pairs?

# %%
print(explain("fewshot", res.metrics))

# %%
nb.save_results(
    run_dir, "fewshot",
    metrics=res.metrics,
    parameters={"base": base.to_dict(), "grid": grid.to_dict(), "metric": res.metric,
                "pretrained": nb.resolve(pretrained)},
    artifacts={"table": res.table_path, "runs": grid_dir / "runs"},
    extra={"paired": paired.to_dict(orient="records"), "failed": res.failed},
)
