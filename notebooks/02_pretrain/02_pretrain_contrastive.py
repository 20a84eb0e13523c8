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
# # Pretrain a SwiFT encoder contrastively (NT-Xent)
#
# **What.** Self-supervised pretraining without masking: take two windows of the same scan,
# far enough apart not to overlap, and train the encoder so that the two land close together
# in its embedding space while windows of *other* subjects in the batch land far away. This is
# the objective of SwiFT v1's public checkpoint (NT-Xent, the SimCLR loss).
#
# **Why.** A subject's brain activity has a signature that persists over minutes (its
# functional connectivity "fingerprint"). An encoder that recognises the same brain in two
# different stretches of time has learned features that belong to the person, not to the
# moment — what sex, age or disease prediction needs.
#
# **How it differs from SimMIM** (`01_pretrain_simmim`): SimMIM reconstructs hidden voxels and
# learns local spatio-temporal structure; the contrastive loss compares whole windows and
# learns subject-level features. Both give an encoder that `03_downstream/01_finetune` can
# start from (`init_from`).

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
splits_dir: str = "data/demo/splits"  # split files are written here and reused
model: str = "swift_v2_5m"  # encoder preset (swiftlib.list_models())
model_overrides: dict = {"depths": [1, 1, 1, 1], "drop_path_rate": 0.0}  # preset fields to change
temperature: float = 0.1  # NT-Xent softmax temperature (SwiFT v1: 0.1)
proj_dim: int = 128  # projection size the loss compares in (SwiFT v1: 128)
mask_same_subject: bool = True  # other pairs of the same subject are not negatives (v1: false)
pair_min_separation: int = -1  # frames between a pair's starts; -1 for one window (v1's rule)
sequence_length: int = 10  # frames per window (SwiFT: 20)
windows_per_subject: int = 1  # training pairs per subject and epoch; 0 for every window
eval_stride_between_seq: float = 2.0  # val/test window step in windows; 2 skips every other
batch_size: int = 8  # global batch of pairs: the other pairs in a batch are the negatives
lr: float = 1e-3  # peak learning rate (warm-up, then cosine decay)
weight_decay: float = 0.01  # AdamW weight decay
mup: bool = False  # µP: width-scaled init and learning rates (docs/models.md)
max_epochs: int = 2  # passes over the training subjects; 2 for a CPU smoke run
accelerator: str = "cpu"  # cpu, gpu or auto
devices: int = 1  # devices per node (Perlmutter: 4)
num_nodes: int = 1  # nodes (SLURM)
strategy: str = "auto"  # auto, ddp, deepspeed_stage_2, deepspeed_stage_3
precision: str = "32-true"  # 32-true, bf16-mixed (A100/H100) or 16-mixed
num_workers: int = 0  # DataLoader worker processes per device
resume_from: str = ""  # continue an interrupted run from its last.ckpt; "" starts at step 0
seed: int = 0  # random seed
run_dir: str = ""  # checkpoints, logs and results.json go here; swiftlib run fills it in

# %% [markdown]
# ## The run configuration
# `nb.fit_config("contrastive", ...)` turns the parameters into one `FitConfig`: the data
# yields *pairs* of windows of one scan, the task is NT-Xent with a projection head. A batch
# of B pairs gives each window one positive (its partner) and 2B − 2 negatives, so larger
# batches make the task harder and the features better (SwiFT v1 used 8 per GPU × many GPUs).

# %%
run_dir = nb.run_dir(run_dir, "contrastive")
config = nb.fit_config(
    "contrastive", run_dir, seed=seed, resume_from=resume_from, store_path=store_path,
    splits_dir=splits_dir,
    model=model, model_overrides=model_overrides, temperature=temperature, proj_dim=proj_dim,
    mask_same_subject=mask_same_subject, pair_min_separation=pair_min_separation,
    sequence_length=sequence_length, windows_per_subject=windows_per_subject,
    eval_stride_between_seq=eval_stride_between_seq, batch_size=batch_size, lr=lr,
    weight_decay=weight_decay, mup=mup, max_epochs=max_epochs, accelerator=accelerator,
    devices=devices,
    num_nodes=num_nodes, strategy=strategy, precision=precision, num_workers=num_workers,
)
print(yaml.safe_dump(config.to_dict(), sort_keys=False))

# %% [markdown]
# ## Train
# `fit` splits the subjects (train / validation / test, by participant), trains, keeps the
# checkpoint with the lowest validation NT-Xent (`checkpoints/best.ckpt`) and scores it on the
# validation and test subjects with fixed pairs.

# %%
result = fit(config)
pd.Series(result.metrics, name="value").round(4).to_frame()

# %% [markdown]
# ## Did it learn anything?
# - `val/nt_xent`: the loss on held-out subjects' fixed pairs; chance is log(2B − 1) for a
#   batch of B pairs (2.7 for B = 8).
# - `val/top1`: how often a window's nearest other window is its own partner.
# - `val/distance_ratio`: mean distance between a subject's windows over the mean distance to
#   other subjects' windows, on the encoder's embeddings; below 1 means the encoder groups a
#   subject's windows together.

# %%
viz.plot_loss_curves(
    run_dir, tags=["train/loss_epoch", "val/nt_xent", "val/top1", "val/distance_ratio"],
    title="contrastive pretraining",
)

# %% [markdown]
# ## What next
# Fine-tune from this encoder: `03_downstream/01_finetune` with `init_from` set to the best
# checkpoint below. On the synthetic cohort a few epochs already pull a subject's windows
# together; on real data pretraining runs for many epochs on thousands of subjects.

# %% [markdown]
# ## What the result means
# The validation numbers in a sentence: can the encoder tell one scan's windows from another's?

# %%
print(explain("contrastive", result.metrics))

# %%
nb.save_results(
    run_dir, "pretrain", metrics=result.metrics, parameters=config.to_dict(),
    artifacts={"best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint,
               "tensorboard": run_dir / "tensorboard", "config": run_dir / "config.yaml"},
    extra={"monitor": result.monitor},
)
