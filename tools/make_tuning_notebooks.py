"""Write the tuning and few-shot notebooks (notebooks/03_downstream/03_tune_optuna.ipynb,
04_fewshot_curves.ipynb) from the cell lists below.

The reviewable source of those two notebooks (committed without outputs).
``python tools/make_tuning_notebooks.py`` writes them; ``--check`` fails when a committed
notebook differs (tests run it). Same rules as tools/make_notebooks.py (STYLE 14–17):
title → imports → one ``parameters`` cell of typed literals with a comment each (no ``=`` in
a comment) → derived values → swiftlib calls → plots → ``nb.save_results``; no ``def``/``class``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "notebooks" / "03_downstream"

from nbgen import IMPORTS, code, md, params, sync  # noqa: E402,F401  (shared cell helpers)

# ---------------------------------------------------------------------------------------
# 03_downstream/03_tune_optuna
# ---------------------------------------------------------------------------------------
TUNE = ("tune", [
    md("""
# Tune fine-tuning hyper-parameters with Optuna

**What.** Search the fine-tuning settings — learning rate, weight decay, layer-wise
learning-rate decay, mode (linear probe / partial unfreeze / full) and unfreeze fraction,
head (linear or MLP) and its dropout, label smoothing, batch size, warm-up — for one label,
with [Optuna](https://optuna.org). Every *trial* is one ordinary fine-tuning run (`fit`)
in its own folder `trial-NNNN/`.

**How the search works.**
* **TPE sampler.** The first trials are random; later ones are drawn where good trials
  cluster (a *Tree-structured Parzen Estimator* models "good" and "bad" settings separately).
* **Pruning.** After every epoch a trial reports its validation metric (the task's one
  monitored metric: AUROC for classification, R² for regression); a trial clearly below the
  median of earlier trials at the same epoch is stopped, which saves most of the budget on a
  large search.
* **Validation picks, test reports.** Trials are compared on the *validation* subjects only.
  Once the study stops, the best trial's checkpoint is scored **once** on the held-out test
  subjects. Choosing among many trials by test scores would overfit the test set and inflate
  the number you report.

**Storage and workers.** The study lives in a database: a SQLite file on one machine, or a
*journal file* on a shared disk, which several SLURM array workers (`slurm/optuna_workers.sbatch`)
join; they share the trial count, and a worker that dies loses only its running trial.
Running this notebook again with the same storage and study name *resumes* the study.
Watch a study live with `optuna-dashboard` (`make dashboard STUDY=...`)."""),
    code(IMPORTS + """
from pathlib import Path

import pandas as pd
from swiftlib.training import FitConfig
from swiftlib.training.tune import SearchSpace, attach, tune
from swiftlib.viz import tuning as viz"""),
    md("""
## Parameters
The defaults run a small study (6 trials of 2 epochs) on the CPU demo cohort in a few
minutes, starting every trial from the demo's SimMIM checkpoint. A range is `[low, high]`;
`[value]` fixes a dimension and `[]` leaves the base setting. `n_trials` counts the study's
trials in total (finished ones from earlier runs included); `0` only attaches to the study
and shows it."""),
    params("""
store_path: str = "data/demo/store_synthetic"  # store with the label
splits_dir: str = "data/demo/splits"  # split files (the same as pretraining, so test subjects stay unseen)
label: str = "sex"  # label to predict
task: str = "classification"  # classification or regression (must match the label)
init_from: str = "papermill_runs/demo/pretrain/checkpoints/best.ckpt"  # encoder weights for every trial; "" for scratch
model: str = "swift_v2_5m"  # encoder preset; must match the checkpoint
model_overrides: dict = {"depths": [1, 1, 1, 1], "drop_path_rate": 0.0}  # preset fields to change; must match the checkpoint
sequence_length: int = 10  # frames per window
windows_per_subject: int = 1  # training windows per subject and epoch; 0 for every window
max_epochs: int = 2  # epochs per trial (pruning decides after each)
max_steps: int = -1  # optimiser steps per trial; -1 for no limit
modes: list = ["linear_probe", "unfreeze", "full"]  # fine-tuning modes to search
lr: list = [0.0001, 0.003]  # peak learning rate range (log scale)
weight_decay: list = [0.0001, 0.1]  # AdamW weight decay range (log scale)
layer_decay: list = [0.6, 1.0]  # layer-wise learning-rate decay range; 1 means none
unfreeze_fraction: list = [0.1, 0.5]  # mode unfreeze: range of the trained top fraction of the encoder
heads: list = ["linear", "mlp"]  # head types to search
head_dropout: list = [0.0, 0.3]  # head dropout range
label_smoothing: list = [0.0, 0.1]  # classification only: label smoothing range
batch_sizes: list = [4, 8]  # global batch sizes to search
warmup_fraction: list = [0.0, 0.2]  # warm-up share of the optimiser steps
n_trials: int = 6  # trials in the study in total; 0 attaches to an existing study without running any
timeout: float = 0.0  # seconds after which no new trial starts; 0 for no limit
pruning: bool = True  # stop unpromising trials after an epoch (median rule)
storage: str = ""  # a .db (SQLite) or .log (journal, shared disks, SLURM workers) file, or a URL; "" for study_dir/optuna.db
study_name: str = "demo-sex"  # study to create, join or resume
study_dir: str = ""  # trial run directories go here; "" for run_dir (SLURM workers share one)
seed: int = 0  # sampler seed (SLURM array workers add their index) and training seed
accelerator: str = "cpu"  # cpu, gpu or auto
precision: str = "32-true"  # 32-true, bf16-mixed or 16-mixed
num_workers: int = 0  # DataLoader worker processes
progress_bar: bool = False  # Lightning progress bar per trial
run_dir: str = ""  # trials (unless study_dir), plots and results.json go here; swiftlib run fills it in"""),
    code("""
run_dir = nb.run_dir(run_dir, "tune")
study_dir = Path(nb.resolve(study_dir)) if study_dir else run_dir
storage_url = (storage if "://" in storage or storage.startswith("journal:")
               else nb.resolve(storage) if storage else str(study_dir / "optuna.db"))
base = FitConfig.from_dict({
    "kind": "finetune", "run_dir": str(study_dir), "seed": seed,
    "data": {"store_path": nb.resolve(store_path), "splits_dir": nb.resolve(splits_dir),
             "sequence_length": sequence_length, "windows_per_subject": windows_per_subject or None,
             "eval_stride_between_seq": 2.0, "num_workers": num_workers, "pin_memory": accelerator != "cpu"},
    "task": {"model": model, "model_overrides": model_overrides, "label": label, "task": task,
             "init_from": nb.resolve(init_from) or None, "seed": seed},
    "trainer": {"max_epochs": max_epochs, "max_steps": max_steps, "accelerator": accelerator,
                "precision": precision, "enable_progress_bar": progress_bar},
})
space = SearchSpace.from_dict({
    "lr": lr, "weight_decay": weight_decay, "layer_decay": layer_decay, "modes": modes or None,
    "unfreeze_fraction": unfreeze_fraction, "heads": heads or None, "head_dropout": head_dropout,
    "label_smoothing": label_smoothing, "batch_sizes": batch_sizes or None, "warmup_fraction": warmup_fraction,
})
print("storage:", storage_url)
print("searching:", ", ".join(space.searched(task)))"""),
    md("""
## Run (or join, or resume) the study
Each trial fine-tunes with settings drawn by the sampler, reports its validation metric
after every epoch (and may be pruned), and keeps its checkpoint and `results.json`. When the
study has `n_trials` trials, the best trial's checkpoint is evaluated on the test split."""),
    code("""
summary = (tune(base, n_trials, storage=storage_url, study_name=study_name, study_dir=study_dir, space=space,
                timeout=timeout or None, seed=seed, pruning=pruning)
           if n_trials > 0 else attach(storage_url, study_name, study_dir, write=True))
print(f"{summary.study_name}: {summary.states}; {summary.direction} {summary.monitor}")
pd.Series(summary.metrics, name="value").round(4).to_frame()"""),
    md("""
## How the search went
**History**: each dot a trial's final validation metric, the line the best so far.
**Intermediate values**: the per-epoch curves of every trial; pruned trials stop early."""),
    code("""viz.plot_study(summary, "history", title=f"optimisation history ({summary.monitor})")"""),
    code("""viz.plot_study(summary, "intermediate", title="per-epoch validation metric (pruned trials stop early)")"""),
    md("""
## Which settings matter
**Importances** (fANOVA): how much of the variation of the metric each hyper-parameter
explains. **Parallel coordinates**: one line per trial across its settings, coloured by the
metric. **Slices**: the metric against each setting. With a handful of trials these are
rough; they sharpen with a real budget (tens to hundreds of trials on GPUs)."""),
    code("""viz.plot_study(summary, "importances", title="hyper-parameter importances")"""),
    code("""viz.plot_study(summary, "parallel", title="parallel coordinates")"""),
    code("""viz.plot_study(summary, "slice", title="metric against each hyper-parameter")"""),
    md("""
## The best trials
Sorted by the validation metric; `run_dir` holds each trial's checkpoint, TensorBoard logs
and `results.json`."""),
    code("""
best = summary.best_trials(5)
best"""),
    md("""
## The best trial on the test split
Scored once, after the search — this is the number to report. With few test subjects (the
demo has 6) it is noisy; compare it to the validation metric only as a sanity check."""),
    code("""
print("best trial:", summary.best_trial, summary.best_params)
pd.DataFrame({"validation": {k.split("/", 1)[1]: v for k, v in summary.val_metrics.items()},
              "test": {k.split("/", 1)[1]: v for k, v in summary.test_metrics.items()}}).round(4)"""),
    md("""
## Watch it live
`optuna-dashboard` shows the same figures while workers run (`pip install optuna-dashboard`):

    make dashboard STUDY=<storage file or URL>      # e.g. papermill_runs/tune/optuna.db"""),
    code("""
nb.save_results(
    run_dir, "tune", metrics=summary.metrics,
    parameters={"base": base.to_dict(), "space": space.to_dict(), "n_trials": n_trials, "study_name": study_name,
                "storage": storage_url, "seed": seed},
    artifacts={"best_checkpoint": summary.best_checkpoint, "best_run_dir": summary.best_run_dir,
               "trials": study_dir / "trials.csv"},
    extra={"monitor": summary.monitor, "direction": summary.direction, "study_name": summary.study_name,
           "storage": storage_url, "best_params": summary.best_params, "states": summary.states},
)"""),
])

# ---------------------------------------------------------------------------------------
# 03_downstream/04_fewshot_curves
# ---------------------------------------------------------------------------------------
FEWSHOT = ("fewshot", [
    md("""
# Few-shot curves: does pretraining help when labels are scarce?

**What.** Fine-tune on training subsets of growing size (e.g. 8, 16, all participants),
once from **scratch** and once from a **pretrained** (SimMIM) encoder, in each fine-tuning
**mode**, for several **seeds**; plot the test metric against the subset size.

**Why.** Self-supervised pretraining is meant to pay off most when labelled subjects are
few: the curves show where (and whether) the pretrained encoder beats scratch, and where
they meet. This is the headline downstream experiment of SwiFT v2.

**Fair comparison.** For one seed, the subset of a given size holds the *same* participants
for both inits (subsets are nested: the 8 lie inside the 16), and the training seed is the
same too, so each pretrained run has a scratch twin. The comparison is therefore *paired*:
the Wilcoxon signed-rank test (no normality assumption) and the paired t test on the
pretrained − scratch differences, reported with the number of pairs n and the p-value.
The band around each curve is a 95 % t-interval over seeds.

**Resuming.** Every cell is a run directory under `GRID_DIR/runs/`; running the notebook
again skips cells that finished, so a grid can grow (more seeds, more sizes) or survive a
crash."""),
    code(IMPORTS + """
from pathlib import Path

import pandas as pd
from swiftlib.training import FitConfig
from swiftlib.training.fewshot import FewShotGrid, run_fewshot
from swiftlib.viz import tuning as viz"""),
    md("""
## Parameters
The defaults (2 sizes × 2 inits × linear probe × 2 seeds = 8 short runs) take a few
minutes on the CPU demo cohort. A real grid: `sizes: [20, 50, 100, "all"]`,
`modes: ["linear_probe", "unfreeze", "full"]`, `seeds: [0, 1, 2, 3, 4]`."""),
    params("""
store_path: str = "data/demo/store_synthetic"  # store with the label
splits_dir: str = "data/demo/splits"  # split files (the same as pretraining, so test subjects stay unseen)
label: str = "sex"  # label to predict
task: str = "classification"  # classification or regression (must match the label)
pretrained: str = "papermill_runs/demo/pretrain/checkpoints/best.ckpt"  # encoder checkpoint of the pretrained runs
model: str = "swift_v2_5m"  # encoder preset; must match the checkpoint
model_overrides: dict = {"depths": [1, 1, 1, 1], "drop_path_rate": 0.0}  # preset fields to change; must match the checkpoint
sizes: list = [8, "all"]  # training participants per run; "all" for the whole training split
inits: list = ["scratch", "pretrained"]  # encoder initialisations to compare
modes: list = ["linear_probe"]  # fine-tuning modes (linear_probe, unfreeze, full)
unfreeze_fraction: float = 0.2  # mode unfreeze: top fraction of the encoder that trains
seeds: list = [0, 1]  # seeds: each draws its own nested subsets and training seed
sequence_length: int = 10  # frames per window
windows_per_subject: int = 1  # training windows per subject and epoch; 0 for every window
batch_size: int = 8  # global batch size
lr: float = 0.001  # peak learning rate
max_epochs: int = 2  # epochs per run
max_steps: int = -1  # optimiser steps per run; -1 for no limit
metric: str = ""  # test metric for the curves; "" for the task's monitored one (test/auroc or test/r2)
grid_dir: str = ""  # run directories and the table go here; "" for run_dir (a rerun resumes)
accelerator: str = "cpu"  # cpu, gpu or auto
precision: str = "32-true"  # 32-true, bf16-mixed or 16-mixed
num_workers: int = 0  # DataLoader worker processes
progress_bar: bool = False  # Lightning progress bar per run
run_dir: str = ""  # plots and results.json go here; swiftlib run fills it in"""),
    code("""
run_dir = nb.run_dir(run_dir, "fewshot")
grid_dir = Path(nb.resolve(grid_dir)) if grid_dir else run_dir
grid = FewShotGrid(sizes=tuple(sizes), inits=tuple(inits), modes=tuple(modes), seeds=tuple(seeds),
                   unfreeze_fraction=unfreeze_fraction)
base = FitConfig.from_dict({
    "kind": "finetune", "run_dir": str(grid_dir), "seed": 0,
    "data": {"store_path": nb.resolve(store_path), "splits_dir": nb.resolve(splits_dir),
             "sequence_length": sequence_length, "windows_per_subject": windows_per_subject or None,
             "eval_stride_between_seq": 2.0, "batch_size": batch_size, "num_workers": num_workers,
             "pin_memory": accelerator != "cpu"},
    "task": {"model": model, "model_overrides": model_overrides, "label": label, "task": task,
             "optim": {"lr": lr}},
    "trainer": {"max_epochs": max_epochs, "max_steps": max_steps, "accelerator": accelerator,
                "precision": precision, "enable_progress_bar": progress_bar},
})
print(f"{len(grid)} runs: sizes {grid.sizes} x inits {grid.inits} x modes {grid.modes} x seeds {grid.seeds}")"""),
    md("""
## Run the grid
Cells run in pairs (scratch, then pretrained, for the same subset and seed); finished
cells are skipped. Each run picks its best epoch on validation and reports the test split."""),
    code("""
res = run_fewshot(base, grid_dir, grid, pretrained=nb.resolve(pretrained) or None, metric=metric or None)
print(f"ran {len(res.ran)}, finished before {len(res.skipped)}, failed {len(res.failed)}; metric {res.metric}")
res.table[["cell", "n", "init", "mode", "seed", "status", res.metric]].round(4)"""),
    md("""
## The curves
Mean test metric over seeds against the number of training participants (log scale), with
the 95 % interval over seeds; one panel per mode. Pretrained above scratch at small sizes is
what pretraining is for; at the full size the two often meet."""),
    code("""viz.plot_fewshot_curves(res.table, res.metric, title=f"few-shot curves: {label}")"""),
    md("""
## Paired comparison
Each point is one pair (same participants, same seed): above the diagonal, the pretrained
encoder did better. The table gives, per mode and over everything, the number of pairs,
the mean difference and the two-sided p-values of the Wilcoxon signed-rank and paired t
tests. With few pairs (the CPU defaults have 4) no test can reach significance: the
smallest possible Wilcoxon p with n pairs is 2 / 2ⁿ — plan seeds × sizes accordingly."""),
    code("""viz.plot_paired(res.table, res.metric, title="pretrained vs scratch (one point per pair)")"""),
    code("""
paired = res.paired(by="mode")
paired.round(4)"""),
    code("""
nb.save_results(
    run_dir, "fewshot",
    metrics=res.metrics,
    parameters={"base": base.to_dict(), "grid": grid.to_dict(), "pretrained": nb.resolve(pretrained), "metric": res.metric},
    artifacts={"table": res.table_path, "runs": grid_dir / "runs"},
    extra={"paired": paired.to_dict(orient="records"), "failed": res.failed},
)"""),
])

NOTEBOOK_SOURCES = {
    "03_tune_optuna.ipynb": TUNE,
    "04_fewshot_curves.ipynb": FEWSHOT,
}


def main(argv=None) -> int:
    return sync(NOTEBOOK_SOURCES, OUT, "tools/make_tuning_notebooks.py", argv)


if __name__ == "__main__":
    sys.exit(main())
