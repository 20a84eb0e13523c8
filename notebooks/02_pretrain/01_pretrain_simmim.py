# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: pretrain
# ---

# %% [markdown]
# # Pretrain a SwiFT encoder with SimMIM
#
# **What.** Self-supervised pretraining: hide random blocks of a 4D fMRI window and train the
# network to fill them in (SimMIM, *masked image modelling*). No labels are used.
#
# **Why.** Labelled fMRI is scarce (hundreds of subjects for most questions) but unlabelled
# scans are plentiful (UKB + ABCD + HCP: tens of thousands of hours). An encoder that can
# predict hidden brain activity from its context has learned how brain signals are organised
# in space and time — a starting point that fine-tuning on a small labelled set benefits from.
#
# **The model.** SwiFT (*Swin fMRI Transformer*) cuts a window of frames into 4D patches
# (tokens), and lets tokens exchange information inside small 4D windows that shift between
# layers (Swin); merging patches between stages gives coarser, wider views. SimMIM adds a
# learned *mask token* for hidden patches and a light decoder back to voxels; the loss is
# the error on masked brain voxels only.
#
# **Scale.** The same notebook is the multi-node job: on Perlmutter,
# `slurm/pretrain_deepspeed.sbatch` runs it under `srun` with `strategy: deepspeed_stage_2`,
# `devices: 4`, `num_nodes: N` (see `notebooks/params/perlmutter_ukb.yaml`).

# %%
import pandas as pd
import yaml

from swiftlib import notebook as nb
from swiftlib.demo import explain
from swiftlib.training import fit
from swiftlib.viz import training as viz

print("swiftlib", nb.setup())

# %% tags=["parameters"]
store_path: str = "data/demo/store_synthetic"  # store to pretrain on; "a, b" mixes several
dataset_weights: str = "balanced"  # mixing of several stores: balanced or proportional
splits_dir: str = "data/demo/splits"  # split files are written here and reused
model: str = "swift_v2_5m"  # encoder preset (swiftlib.list_models())
model_overrides: dict = {"patch_size": [6, 6, 6, 2], "depths": [1, 1, 1], "num_heads": [2, 4, 8], "embed_dim": 24, "drop_path_rate": 0.0, "layer_scale_init": 0.0}  # preset fields to change  # noqa: E501
mask_ratio: float = 0.5  # fraction of mask blocks hidden (0.2 to 0.8)
mask_strategy: str = "random"  # random, tube (same blocks in every frame) or block
sequence_length: int = 20  # frames per window (read every stride_within_seq-th frame)
stride_within_seq: int = 3  # frame step inside a window (3: 20 frames span 60, 48 s)
stride_between_seq: float = 0.01  # training window starts, in windows; 0.01: any frame
windows_per_subject: int = 4  # training windows drawn per subject and epoch; 0 for every window
eval_stride_between_seq: float = 1.0  # val/test window step in windows; 1 back to back
batch_size: int = 8  # global batch: per device x devices x nodes x accumulation
lr: float = 1.5e-3  # peak learning rate (warm-up, then cosine decay)
weight_decay: float = 0.05  # AdamW weight decay
mup: bool = False  # µP: width-scaled init and learning rates (docs/models.md)
max_epochs: int = 3  # passes over the training subjects; 3 for the CPU demo
max_steps: int = -1  # stop after this many optimiser steps; -1 for no limit
accelerator: str = "cpu"  # cpu, gpu or auto
devices: int = 1  # devices per node (Perlmutter: 4)
num_nodes: int = 1  # nodes (SLURM)
strategy: str = "auto"  # auto, ddp, deepspeed_stage_2, deepspeed_stage_3
precision: str = "32-true"  # 32-true, bf16-mixed (A100/H100) or 16-mixed
accumulate_grad_batches: int = 1  # gradient accumulation steps
num_workers: int = 0  # DataLoader worker processes per device
pin_memory: bool = False  # page-locked batches for faster copies to the GPU; true on GPUs
checkpoint_every_n_steps: int = 0  # also write last.ckpt every n steps; 0 at epoch ends only
enable_progress_bar: bool = False  # Lightning progress bar (interactive use)
resume_from: str = ""  # continue an interrupted run from its last.ckpt; "" starts at step 0
seed: int = 0  # random seed
run_dir: str = ""  # checkpoints, logs and results.json go here; swiftlib run fills it in

# %% [markdown]
# ## The run configuration
# `nb.fit_config` turns the parameters into one `FitConfig` (data, task, trainer), checked
# before anything runs: unknown settings, a batch size that does not divide over devices, or
# a mask ratio outside 0.2–0.8 fail here with a message.

# %%
run_dir = nb.run_dir(run_dir, "pretrain")
config = nb.fit_config(
    "pretrain", run_dir, seed=seed, resume_from=resume_from, store_path=store_path,
    dataset_weights=dataset_weights, splits_dir=splits_dir, model=model,
    model_overrides=model_overrides, mask_ratio=mask_ratio, mask_strategy=mask_strategy,
    sequence_length=sequence_length, stride_within_seq=stride_within_seq,
    stride_between_seq=stride_between_seq, windows_per_subject=windows_per_subject,
    eval_stride_between_seq=eval_stride_between_seq,
    batch_size=batch_size, lr=lr, weight_decay=weight_decay, mup=mup, max_epochs=max_epochs,
    max_steps=max_steps, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
    strategy=strategy, precision=precision, accumulate_grad_batches=accumulate_grad_batches,
    num_workers=num_workers, pin_memory=pin_memory,
    checkpoint_every_n_steps=checkpoint_every_n_steps, enable_progress_bar=enable_progress_bar,
)
print(yaml.safe_dump(config.to_dict(), sort_keys=False))

# %% [markdown]
# ## Train
# `fit` builds the data (subject-level train/val/test split, written once and reused),
# the SimMIM task and a Lightning Trainer, trains, then scores the best checkpoint on the
# validation and test subjects. It writes `checkpoints/best.ckpt` (lowest validation
# reconstruction loss), `checkpoints/last.ckpt` (to resume), TensorBoard logs and
# `config.yaml` into the run directory.

# %%
result = fit(config)
pd.Series(result.metrics, name="value").round(4).to_frame()

# %% [markdown]
# ## Did it learn anything?
# `val/recon_loss` is the error on hidden brain voxels. `val/mean_predictor_loss` is the error
# of a trivial guess (every hidden voxel = the mean of the visible ones); their ratio
# `val/recon_ratio` below 1 means the model predicts more than the average intensity.
# The curves are read back from the TensorBoard event files.

# %%
viz.plot_loss_curves(run_dir, title="SimMIM losses")

# %% [markdown]
# ## Reconstructions
# A validation window: the input, what the model saw (hidden blocks blank), its
# reconstruction and the error on hidden voxels, at a few frames. Early in training the
# reconstruction is a blurred average; with more data and steps it recovers structure.

# %%
examples = viz.load_reconstructions(run_dir)
viz.plot_reconstructions(examples, index=0, num_frames=4)

# %% [markdown]
# ## What the result means
# The validation numbers in a sentence: the masked-patch error against a predictor that knows
# only each voxel's mean.

# %%
print(explain("pretrain", result.metrics))

# %%
nb.save_results(
    run_dir, "pretrain", metrics=result.metrics, parameters=config.to_dict(),
    artifacts={"best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint,
               "tensorboard": run_dir / "tensorboard", "config": run_dir / "config.yaml",
               "reconstructions": run_dir / "reconstructions.pt"},
    extra={"monitor": result.monitor},
)
