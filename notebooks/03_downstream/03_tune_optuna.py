# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: tune
# ---

# %% [markdown]
# # Tune fine-tuning hyper-parameters with Optuna
#
# **What.** Search the fine-tuning settings — learning rate, weight decay, layer-wise
# learning-rate decay, mode (linear probe / partial unfreeze / full) and unfreeze fraction,
# head (linear or MLP) and its dropout, label smoothing, batch size, warm-up — for one label,
# with [Optuna](https://optuna.org). Every *trial* is one ordinary fine-tuning run (`fit`)
# in its own folder `trial-NNNN/`.
#
# **How the search works.**
# * **TPE sampler.** The first trials are random; later ones are drawn where good trials
#   cluster (a *Tree-structured Parzen Estimator* models "good" and "bad" settings separately).
# * **Pruning.** After every epoch a trial reports its validation metric (the task's one
#   monitored metric: AUROC for classification, R² for regression); a trial clearly below the
#   median of earlier trials at the same epoch is stopped, which saves most of the budget on a
#   large search.
# * **Validation picks, test reports.** Trials are compared on the *validation* subjects only.
#   Once the study stops, the best trial's checkpoint is scored **once** on the held-out test
#   subjects. Choosing among many trials by test scores would overfit the test set and inflate
#   the number you report.
#
# **Storage and workers.** The study lives in a database: a SQLite file on one machine, or a
# *journal file* on a shared disk, which several SLURM array workers (`slurm/optuna_workers.sbatch`)
# join; they share the trial count, and a worker that dies loses only its running trial.
# Running this notebook again with the same storage and study name *resumes* the study.
# Watch a study live with `optuna-dashboard` (`make dashboard STUDY=...`).

# %%
from pathlib import Path

import pandas as pd

from swiftlib import notebook as nb
from swiftlib.demo import explain
from swiftlib.training.tune import SearchSpace, attach, tune
from swiftlib.viz import tuning as viz

print("swiftlib", nb.setup())

# %% [markdown]
# ## Parameters
# The defaults run a small study (6 trials of 2 epochs) on the CPU demo cohort in a few
# minutes, starting every trial from the demo's SimMIM checkpoint. A range is `[low, high]`;
# `[value]` fixes a dimension and `[]` leaves the base setting. `n_trials` counts the study's
# trials in total (finished ones from earlier runs included); `0` only attaches to the study
# and shows it.

# %% tags=["parameters"]
store_path: str = "data/demo/store_synthetic"  # store with the label
splits_dir: str = "data/demo/splits"  # split files (as pretraining: test subjects stay unseen)
label: str = "sex"  # label to predict
task: str = "auto"  # auto (as the store declares the label), classification or regression
init_from: str = "papermill_runs/demo/pretrain/checkpoints/best.ckpt"  # encoder; "" for scratch
model: str = "swift_v2_5m"  # encoder preset; must match the checkpoint
model_overrides: dict = {"patch_size": [6, 6, 6, 2], "depths": [1, 1, 1], "num_heads": [2, 4, 8], "embed_dim": 24, "drop_path_rate": 0.0, "layer_scale_init": 0.0}  # as in the checkpoint  # noqa: E501
sequence_length: int = 20  # frames per window (read every stride_within_seq-th frame)
stride_within_seq: int = 3  # frame step inside a window (3: 20 frames span 60, 48 s)
stride_between_seq: float = 0.01  # training window starts, in windows; 0.01: any frame
windows_per_subject: int = 4  # training windows per subject and epoch; 0 for every window
eval_stride_between_seq: float = 1.0  # val/test window step in windows; 1 back to back
max_epochs: int = 2  # epochs per trial (pruning decides after each)
max_steps: int = -1  # optimiser steps per trial; -1 for no limit
modes: list = ["linear_probe", "unfreeze", "full"]  # fine-tuning modes to search
lr: list = [0.0001, 0.003]  # peak learning rate range (log scale)
weight_decay: list = [0.0001, 0.1]  # AdamW weight decay range (log scale)
layer_decay: list = [0.6, 1.0]  # layer-wise learning-rate decay range; 1 means none
unfreeze_fraction: list = [0.1, 0.5]  # mode unfreeze: range of the encoder's trained top fraction
heads: list = ["linear", "mlp"]  # head types to search
head_dropout: list = [0.0, 0.3]  # head dropout range
label_smoothing: list = [0.0, 0.1]  # classification only: label smoothing range
batch_sizes: list = [8]  # global batch sizes to search
warmup_fraction: list = [0.0, 0.2]  # warm-up share of the optimiser steps
n_trials: int = 2  # trials in the study in total; 0 attaches to the study and runs none
timeout: float = 0.0  # seconds after which no new trial starts; 0 for no limit
pruning: bool = True  # stop unpromising trials after an epoch (median rule)
storage: str = ""  # .db (SQLite), .log (journal: SLURM workers) or URL; "" for study_dir/optuna.db
study_name: str = "demo-sex"  # study to create, join or resume
study_dir: str = ""  # trial run directories go here; "" for run_dir (SLURM workers share one)
seed: int = 0  # sampler seed (SLURM array workers add their index) and training seed
accelerator: str = "cpu"  # cpu, gpu or auto
precision: str = "32-true"  # 32-true, bf16-mixed or 16-mixed
num_workers: int = 0  # DataLoader worker processes
pin_memory: bool = False  # page-locked batches for faster copies to the GPU; true on GPUs
enable_progress_bar: bool = False  # Lightning progress bar per trial
run_dir: str = ""  # trials (unless study_dir), plots, results.json; swiftlib run fills it in

# %%
run_dir = nb.run_dir(run_dir, "tune")
study_dir = Path(nb.resolve(study_dir)) if study_dir else run_dir
storage_url = (storage if "://" in storage or storage.startswith("journal:")
               else nb.resolve(storage) if storage else str(study_dir / "optuna.db"))
base = nb.fit_config(
    "finetune", study_dir, seed=seed, store_path=store_path, splits_dir=splits_dir, label=label,
    task=task, init_from=init_from, model=model, model_overrides=model_overrides,
    sequence_length=sequence_length, stride_within_seq=stride_within_seq,
    stride_between_seq=stride_between_seq, windows_per_subject=windows_per_subject,
    eval_stride_between_seq=eval_stride_between_seq, max_epochs=max_epochs, max_steps=max_steps,
    accelerator=accelerator, precision=precision, num_workers=num_workers, pin_memory=pin_memory,
    enable_progress_bar=enable_progress_bar,
)
space = SearchSpace.from_dict({
    "lr": lr, "weight_decay": weight_decay, "layer_decay": layer_decay, "modes": modes or None,
    "unfreeze_fraction": unfreeze_fraction, "heads": heads or None, "head_dropout": head_dropout,
    "label_smoothing": label_smoothing, "batch_sizes": batch_sizes or None,
    "warmup_fraction": warmup_fraction,
})
print("storage:", storage_url)
print("searching:", ", ".join(space.searched(task)))

# %% [markdown]
# ## Run (or join, or resume) the study
# Each trial fine-tunes with settings drawn by the sampler, reports its validation metric
# after every epoch (and may be pruned), and keeps its checkpoint and `results.json`. When the
# study has `n_trials` trials, the best trial's checkpoint is evaluated on the test split.

# %%
summary = (tune(base, n_trials, storage=storage_url, study_name=study_name, study_dir=study_dir,
                space=space, timeout=timeout or None, seed=seed, pruning=pruning)
           if n_trials > 0 else attach(storage_url, study_name, study_dir, write=True))
print(f"{summary.study_name}: {summary.states}; {summary.direction} {summary.monitor}")
pd.Series(summary.metrics, name="value").round(4).to_frame()

# %% [markdown]
# ## How the search went
# **History**: each dot a trial's final validation metric, the line the best so far.
# **Intermediate values**: the per-epoch curves of every trial; pruned trials stop early.

# %%
viz.plot_study(summary, "history", title=f"optimisation history ({summary.monitor})")

# %%
viz.plot_study(summary, "intermediate",
               title="per-epoch validation metric (pruned trials stop early)")

# %% [markdown]
# ## Which settings matter
# **Importances** (fANOVA): how much of the variation of the metric each hyper-parameter
# explains. **Parallel coordinates**: one line per trial across its settings, coloured by the
# metric. **Slices**: the metric against each setting. With a handful of trials these are
# rough; they sharpen with a real budget (tens to hundreds of trials on GPUs).

# %%
viz.plot_study(summary, "importances", title="hyper-parameter importances")

# %%
viz.plot_study(summary, "parallel", title="parallel coordinates")

# %%
viz.plot_study(summary, "slice", title="metric against each hyper-parameter")

# %% [markdown]
# ## The best trials
# Sorted by the validation metric; `run_dir` holds each trial's checkpoint, TensorBoard logs
# and `results.json`.

# %%
best = summary.best_trials(5)
best

# %% [markdown]
# ## The best trial on the test split
# Scored once, after the search — this is the number to report. With few test subjects (the
# demo has 6) it is noisy; compare it to the validation metric only as a sanity check.

# %%
print("best trial:", summary.best_trial, summary.best_params)
pd.DataFrame({"validation": {k.split("/", 1)[1]: v for k, v in summary.val_metrics.items()},
              "test": {k.split("/", 1)[1]: v for k, v in summary.test_metrics.items()}}).round(4)

# %% [markdown]
# ## Watch it live
# `optuna-dashboard` shows the same figures while workers run (`pip install optuna-dashboard`):
#
#     make dashboard STUDY=<storage file or URL>      # e.g. papermill_runs/tune/optuna.db

# %% [markdown]
# ## What the result means
# The best trial's test numbers in a sentence. A short study on a CPU budget mostly shows the
# machinery; its best trial is rarely better than the default recipe.

# %%
print(explain("tune", summary.metrics, label=label, store_path=store_path))

# %%
nb.save_results(
    run_dir, "tune", metrics=summary.metrics,
    parameters={"base": base.to_dict(), "space": space.to_dict(), "n_trials": n_trials,
                "study_name": study_name, "storage": storage_url, "seed": seed},
    artifacts={"best_checkpoint": summary.best_checkpoint, "best_run_dir": summary.best_run_dir,
               "trials": study_dir / "trials.csv"},
    extra={"monitor": summary.monitor, "direction": summary.direction,
           "study_name": summary.study_name, "storage": storage_url,
           "best_params": summary.best_params, "states": summary.states},
)
