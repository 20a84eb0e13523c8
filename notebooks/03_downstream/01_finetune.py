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
# # Fine-tune on a label
#
# **What.** Train the encoder plus a small head to predict a subject-level label (sex:
# classification; age: regression) from fMRI windows, starting from pretrained weights.
#
# **Why and how.** The head pools the encoder's last tokens into one embedding per window and
# maps it to the label. Three modes trade data for flexibility:
#
# | mode | trained | when |
# |---|---|---|
# | `linear_probe` | head only (encoder frozen) | what pretraining learned; very few subjects |
# | `unfreeze` | head + the top `unfreeze_fraction` of the encoder | a few hundred subjects |
# | `full` | everything | thousands of subjects |
#
# `few_shot_n` trains on a subset of the training participants (e.g. 100) to measure how much
# pretraining helps when labels are scarce. A subject's prediction is the average over all
# its windows.
#
# **The demo predicts `sex`.** On the synthetic cohort sex is planted as a motor-network
# coupling of opposite sign (+0.9 vs −0.9) that the raw data show (`03_explore_cohort`), the
# two classes are balanced, and AUROC has a plain chance level (0.5): a result a newcomer can
# check against the truth. `age` (regression, R²) and `null_label` (no signal: must stay at
# chance) are the other two planted labels.

# %%
import pandas as pd
import yaml

from swiftlib import notebook as nb
from swiftlib.demo import explain
from swiftlib.training import fit
from swiftlib.viz import training as viz

print("swiftlib", nb.setup())

# %% tags=["parameters"]
store_path: str = "data/demo/store_synthetic"  # store with the label
splits_dir: str = "data/demo/splits"  # split files (as pretraining: test subjects stay unseen)
label: str = "sex"  # label to predict (the store's label table lists them)
task: str = "auto"  # auto (as the store declares the label), classification or regression
mode: str = "full"  # full, linear_probe (frozen encoder) or unfreeze (top fraction)
unfreeze_fraction: float = 0.2  # mode unfreeze: top fraction of block groups that train
few_shot_n: int = 0  # train on this many training participants; 0 for all
init_from: str = ""  # encoder checkpoint; "" for random initialisation (the demo)
template_mismatch: str = "warn"  # init_from trained on another MNI template: warn/error/ignore
model: str = "swift_v2_5m"  # encoder preset; must match the checkpoint
model_overrides: dict = {"patch_size": [6, 6, 6, 2], "depths": [1, 1, 1], "num_heads": [2, 4, 8], "embed_dim": 24, "drop_path_rate": 0.0, "layer_scale_init": 0.0}  # as in the checkpoint  # noqa: E501
head: str = "linear"  # linear or mlp
sequence_length: int = 20  # frames per window (read every stride_within_seq-th frame)
stride_within_seq: int = 3  # frame step inside a window (3: 20 frames span 60, 48 s)
stride_between_seq: float = 0.01  # training window starts, in windows; 0.01: any frame
windows_per_subject: int = 4  # training windows drawn per subject and epoch; 0 for every window
eval_stride_between_seq: float = 1.0  # val/test window step in windows; 1 back to back
batch_size: int = 8  # global batch: per device x devices x nodes x accumulation
lr: float = 1e-3  # peak learning rate
layer_decay: float = 1.0  # per-layer learning-rate decay (fine-tuning: often 0.75); 1 for none
weight_decay: float = 0.05  # AdamW weight decay
mup: bool = False  # µP: width-scaled init and learning rates (docs/models.md)
max_epochs: int = 5  # passes over the training subjects
max_steps: int = -1  # stop after this many optimiser steps; -1 for no limit
accelerator: str = "cpu"  # cpu, gpu or auto
devices: int = 1  # devices per node (Perlmutter: 4)
num_nodes: int = 1  # nodes (SLURM)
strategy: str = "auto"  # auto, ddp, deepspeed_stage_2
precision: str = "32-true"  # 32-true, bf16-mixed or 16-mixed
accumulate_grad_batches: int = 1  # gradient accumulation steps
num_workers: int = 0  # DataLoader worker processes per device
pin_memory: bool = False  # page-locked batches for faster copies to the GPU; true on GPUs
checkpoint_every_n_steps: int = 0  # also write last.ckpt every n steps; 0 at epoch ends only
enable_progress_bar: bool = False  # Lightning progress bar (interactive use)
resume_from: str = ""  # continue an interrupted run from its last.ckpt; "" starts at step 0
seed: int = 0  # random seed
run_dir: str = ""  # checkpoints, logs and results.json go here; swiftlib run fills it in

# %%
run_dir = nb.run_dir(run_dir, "finetune")
config = nb.fit_config(
    "finetune", run_dir, seed=seed, resume_from=resume_from, store_path=store_path,
    splits_dir=splits_dir, label=label, task=task, mode=mode,
    unfreeze_fraction=unfreeze_fraction, few_shot_n=few_shot_n,
    init_from=init_from, template_mismatch=template_mismatch, mup=mup, model=model,
    model_overrides=model_overrides, head=head,
    sequence_length=sequence_length, stride_within_seq=stride_within_seq,
    stride_between_seq=stride_between_seq, windows_per_subject=windows_per_subject,
    eval_stride_between_seq=eval_stride_between_seq, batch_size=batch_size, lr=lr,
    layer_decay=layer_decay, weight_decay=weight_decay, max_epochs=max_epochs, max_steps=max_steps,
    accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
    precision=precision, accumulate_grad_batches=accumulate_grad_batches, num_workers=num_workers,
    pin_memory=pin_memory, checkpoint_every_n_steps=checkpoint_every_n_steps,
    enable_progress_bar=enable_progress_bar,
)
print(yaml.safe_dump(config.to_dict(), sort_keys=False))

# %% [markdown]
# ## Train
# The checkpoint's *normalisation contract* (grid, voxel size, normalisation, TR range) is
# checked against the store first: fine-tuning on differently preprocessed data is refused
# with a message, because the encoder would see inputs unlike anything it was trained on.
# The best epoch by the monitored validation metric (AUROC for classification, R² for
# regression) is kept and scored on the test subjects.

# %%
result = fit(config)
print("monitored:", result.monitor)
pd.Series(result.metrics, name="value").round(4).to_frame()

# %% [markdown]
# ## Learning curves and validation predictions
# Training loss per step and the validation metric per epoch; then the per-subject
# validation predictions (mean over each subject's windows).

# %%
scalars = viz.read_scalars(run_dir)
tags = [t for t in scalars["tag"].unique() if t in ("train/loss_step", "val/loss", result.monitor)]
viz.plot_loss_curves(scalars, tags=tags, title="fine-tuning curves")

# %%
val = pd.read_csv(run_dir / "predictions_val.csv")
(viz.plot_roc(val, title="validation ROC (per subject)") if task == "classification"
 else viz.plot_pred_vs_true(val))

# %% [markdown]
# ## What the result means
# The test numbers in a sentence, against chance and, on the synthetic cohort, against the
# planted truth; a poor result says what usually causes it.

# %%
print(explain("finetune", result.metrics, label=label, store_path=store_path))

# %%
nb.save_results(
    run_dir, "finetune", metrics=result.metrics, parameters=config.to_dict(),
    artifacts={"best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint,
               "tensorboard": run_dir / "tensorboard", "config": run_dir / "config.yaml",
               "predictions_val": run_dir / "predictions_val.csv",
               "predictions_test": run_dir / "predictions_test.csv"},
    extra={"monitor": result.monitor},
)
