"""Write the stage notebooks (01_data, 02_pretrain, 03_downstream) from the cell lists below.

The notebooks are committed without outputs; this file is their reviewable source.
Edit a notebook here, then ``python tools/make_notebooks.py`` (``--check`` fails when a
committed notebook differs from what this file writes; tests run it). Notebooks written
by hand elsewhere (``notebooks/04_interpret``) are not touched.

Rules (docs/notebooks.md, STYLE 14–17): title and purpose → imports → one ``parameters``
cell of typed literals with a trailing comment each (no ``=`` inside comments: papermill
reads ``name: type = value  # help``) → derived values → swiftlib calls → plots →
``nb.save_results``. No ``def``/``class``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

from nbgen import IMPORTS, code, md, params, sync  # noqa: E402,F401  (shared cell helpers)

# ---------------------------------------------------------------------------------------
# 01_data/01_make_synthetic_cohort
# ---------------------------------------------------------------------------------------
MAKE_COHORT = ("data", [
    md("""
# Make the synthetic cohort

**What.** A cohort of simulated resting-state fMRI scans with *known* answers, written as a
swiftlib *subject store* — the format every later notebook reads.

**Why.** Real cohorts (UKB, ABCD, HCP) need data-access agreements and GPUs. A synthetic
cohort runs anywhere in a minute, and because we planted the signals ourselves we can check
that a model finds them — and finds nothing where nothing was planted.

**fMRI in one paragraph.** An fMRI scan is a *4D* image: a 3D volume of the brain's BOLD
signal (blood oxygenation, a slow proxy for neural activity) recorded every *TR* seconds
(here 0.8 s). Scans are registered to a standard brain template (*MNI space*) so that a voxel
means the same place in every subject. SwiFT models read these 4D volumes directly, without
first averaging them into regions.
"""),
    code(IMPORTS + """
from swiftlib.data.synthetic import SyntheticConfig, make_synthetic_cohort
from swiftlib.viz import data as viz"""),
    md("""
## Parameters
Defaults build the demo cohort (40 subjects, 4 mm voxels → a 48×48×48 grid, 60 frames).
`voxel_size: 2.0` gives the real SwiFT layout (96³), much larger on disk."""),
    params("""
out_dir: str = "data/demo/store_synthetic"  # store to create (a rerun resumes)
num_subjects: int = 40  # subjects (at least 4)
num_frames: int = 60  # frames (volumes) per scan
voxel_size: float = 4.0  # mm; 4 gives a 48³ grid (CPU), 2 the real SwiFT 96³
tr: float = 0.8  # repetition time in seconds
num_sites: int = 3  # scanner sites (1 to 5)
seed: int = 0  # random seed; the cohort is reproducible bit for bit
export_nifti_dir: str = "data/demo/synthetic_bids"  # also write scans as BIDS-like NIfTI here; "" for none
export_subjects: int = 8  # subjects exported as NIfTI (NIfTI is bulky)
run_dir: str = ""  # results.json goes here; swiftlib run fills it in"""),
    code("""
out_dir = nb.resolve(out_dir)
export_nifti_dir = nb.resolve(export_nifti_dir) or None
run_dir = nb.run_dir(run_dir, "data")
config = SyntheticConfig(num_subjects=num_subjects, num_frames=num_frames, voxel_size=voxel_size, tr=tr,
                         num_sites=num_sites, seed=seed)
config"""),
    md("""
## Generate
Each subject gets a smooth baseline, seven brain regions driven by slow (0.01–0.1 Hz)
fluctuations, noise, and a scanner-site intensity. Three labels are planted:

| label | what differs between subjects |
|---|---|
| `sex` | left and right motor cortex fluctuate *together* (correlation 0.9) for sex 1, independently for sex 0 |
| `age` | the fluctuation *amplitude* of the precuneus grows with age |
| `null_label` | nothing — a negative control: any model "predicting" it is fooling us |

The store holds one compressed HDF5 file per subject (16-bit floats) plus `subjects.csv`,
a checksummed `manifest.json`, and `ground_truth/` with the region masks."""),
    code("""
store = make_synthetic_cohort(out_dir, config=config, export_nifti=export_nifti_dir,
                              export_subjects=export_subjects)
summary = store.summary()
summary"""),
    md("""
## The subjects table and the labels
One row per scan: `subject_id` (the scan), `participant_id` (the person — splits group by
it so nobody is in both training and test), `dataset`, `site` and the labels."""),
    code("""
display(store.subjects.head())
viz.label_table(store)"""),
    md("""
## Where the signals are
The ground-truth regions on the MNI template. `sex_a`/`sex_b` carry the sex signal,
`age` the age signal; the others are background networks shared by everyone."""),
    code("""viz.plot_regions(store);"""),
    md("""
## One frame of one subject
Three slices through the middle of the grid. The background is constant (the in-brain
minimum after z-scoring), so models see only the brain's structure."""),
    code("""
subject = store.subject_ids[0]
viz.plot_mid_slices(store.read_window(subject, start=0, length=1), title=f"{subject}, frame 0")"""),
    code("""
nb.save_results(
    run_dir, "data",
    metrics={"data/num_subjects": len(store), "data/size_mb": summary["bytes_on_disk"] / 1e6,
             "data/num_exported": export_subjects if export_nifti_dir else 0},
    parameters=config.__dict__,
    artifacts={"store": out_dir, "ground_truth": f"{out_dir}/ground_truth", "nifti_export": export_nifti_dir},
)"""),
])

# ---------------------------------------------------------------------------------------
# 01_data/02_preprocess_nifti
# ---------------------------------------------------------------------------------------
PREPROCESS = ("data", [
    md("""
# Preprocess NIfTI / BIDS derivatives into a store

**What.** Turn 4D NIfTI scans that are already in MNI space (e.g. fMRIPrep outputs,
`*_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz`) into a subject store.

**Why.** Training reads short windows of consecutive frames thousands of times; a store
keeps each subject in one chunked, compressed file on a fixed grid, with a brain mask,
normalisation statistics and the exact geometry back to MNI space (so attribution maps
can be written back as NIfTI later).

**Real data** is a parameter file, never an edit of this notebook, e.g.
`swiftlib run notebooks/01_data/02_preprocess_nifti.ipynb -f notebooks/params/perlmutter_ukb.yaml`.
The defaults preprocess the synthetic cohort's NIfTI export and check that the result is
identical, bit for bit, to the store the generator wrote directly."""),
    code(IMPORTS + """
import numpy as np
from swiftlib.data.preprocess import PreprocessConfig, preprocess
from swiftlib.data.store import open_store
from swiftlib.viz import data as viz"""),
    params("""
input_path: str = "data/demo/synthetic_bids"  # a 4D NIfTI, a folder of them, or BIDS derivatives (MNI space)
out_dir: str = "data/demo/store_from_nifti"  # store to write (a rerun resumes)
phenotype: str = "data/demo/synthetic_bids/participants.tsv"  # phenotype table (CSV/TSV); "" for none
dataset: str = "synthetic"  # dataset adapter: UKB, ABCD, HCP, ABIDE, EMBARC, synthetic, custom
voxel_size: float = 4.0  # store voxel size in mm (SwiFT: 2)
grid: list = [48, 48, 48]  # store grid D, H, W (SwiFT: 96, 96, 96)
normalisation: str = "zscore_global"  # zscore_global (SwiFT), zscore_voxel, psc (percent signal change) or none
mask: str = "auto"  # brain mask: auto, mni, or the path of a mask NIfTI
min_frames: int = 1  # refuse scans shorter than this many frames
tr: float = 0.0  # TR in seconds; 0 reads it from the sidecar or the header
assume_mni: bool = False  # skip the MNI-space check (you vouch for the space)
num_jobs: int = 2  # subjects preprocessed in parallel
compare_to_store: str = "data/demo/store_synthetic"  # check bit-identity against this store; "" to skip
run_dir: str = ""  # results.json goes here; swiftlib run fills it in"""),
    code("""
input_path, out_dir = nb.resolve(input_path), nb.resolve(out_dir)
phenotype = nb.resolve(phenotype) or None
compare_to_store = nb.resolve(compare_to_store)
run_dir = nb.run_dir(run_dir, "data")
config = PreprocessConfig(voxel_size=voxel_size, grid=tuple(grid), normalisation=normalisation, mask=mask,
                          min_frames=min_frames, tr=tr or None, assume_mni=assume_mni, n_jobs=num_jobs)
config"""),
    md("""
## Preprocess
Per scan: load and validate (4D, finite, enough frames, a plausible TR, MNI space),
reorient, put on the store grid (an exact crop/pad when the scan is on the same voxel
lattice, else resampling), compute a brain mask, z-score over brain voxels and time, and
write. Failures are listed with their reason; the other subjects are stored."""),
    code("""
report = preprocess(input_path, out_dir, phenotype=phenotype, dataset=dataset, config=config)
print(f"written {len(report.written)}, skipped (done before) {len(report.skipped)}, failed {len(report.failed)}")
report.failed"""),
    code("""
store = open_store(out_dir)
store.summary()"""),
    md("""
## Same data, two paths
The synthetic generator writes its store directly; here the same scans went through
NIfTI files and the real-data path. Equal arrays mean the preprocessing changes nothing
it should not (no resampling, no off-by-one voxel shifts, same normalisation)."""),
    code("""
reference = open_store(compare_to_store) if compare_to_store else None
identical = [bool(np.array_equal(store.read_subject(s), reference.read_subject(s)))
             for s in store.subject_ids] if reference is not None else []
print(f"identical to {compare_to_store}: {sum(identical)}/{len(identical)} subjects" if reference is not None
      else "no reference store given")"""),
    code("""
subject = store.subject_ids[0]
viz.plot_ortho(store, subject, frame=0);"""),
    code("""
nb.save_results(
    run_dir, "data",
    metrics={"data/written": len(report.written), "data/skipped": len(report.skipped),
             "data/failed": len(report.failed), "data/num_subjects": len(store),
             **({"data/identical_to_reference": float(all(identical))} if identical else {})},
    parameters=report.to_dict().get("config", {}),
    artifacts={"store": out_dir, "report": f"{out_dir}/preprocess_report.json"},
    status="ok" if report.ok and all(identical) else "failed",
    error=None if report.ok and all(identical) else
    f"failed subjects: {sorted(report.failed)}; identical: {sum(identical)}/{len(identical)}",
)"""),
])

# ---------------------------------------------------------------------------------------
# 01_data/03_explore_cohort
# ---------------------------------------------------------------------------------------
EXPLORE = ("data", [
    md("""
# Explore a cohort

**What.** Look at a store before training on it: who is in it (labels, sites), what one
scan looks like in space (orthogonal views) and in time (voxel time series, carpet plot).

**Why.** Most failed fMRI models fail on data: a site that is all one class, a label that
is constant, scans that are mostly artefact. Minutes spent here save GPU-days later."""),
    code(IMPORTS + """
from pathlib import Path

import plotly.express as px
from swiftlib.data.store import open_store
from swiftlib.viz import data as viz"""),
    params("""
store_path: str = "data/demo/store_synthetic"  # store to explore
subject: str = ""  # subject id to look at; "" for the first one
frame: int = 0  # frame shown in the brain views
coords_mm: dict = {}  # time-series points {name: [x, y, z]} in MNI mm; {} for the synthetic regions
max_subjects: int = 40  # subjects read for the cohort-level coupling plot
run_dir: str = ""  # results.json goes here; swiftlib run fills it in"""),
    code("""
store_path = nb.resolve(store_path)
run_dir = nb.run_dir(run_dir, "data")
store = open_store(store_path)
subject = subject or store.subject_ids[0]
has_ground_truth = (Path(store_path) / "ground_truth" / "ground_truth.json").is_file()
coords = {k: tuple(v) for k, v in coords_mm.items()} or (viz.region_centres(store) if has_ground_truth else {})
store"""),
    md("""
## Who is in the cohort
Labels with their task type, and subjects per site. A label that differs strongly between
sites can be "predicted" from the site alone — check before believing a result."""),
    code("""
display(viz.label_table(store))
viz.site_table(store)"""),
    md("""
## One scan in space
nilearn's orthogonal view of one frame, in MNI coordinates (mm). The crosshair position is
the centre of the brain; every subject of a store lies on the same grid."""),
    code("""viz.plot_ortho(store, subject, frame=frame);"""),
    code("""viz.plot_mid_slices(store.read_subject(subject), frame=frame, title=f"{subject}, frame {frame}")"""),
    md("""
## One scan in time
The BOLD signal at a few points (for the synthetic cohort: the centres of the planted
regions). Zoom in and hide lines in the legend: for a subject with sex 1, `sex_a` and
`sex_b` move together."""),
    code("""
ts = viz.voxel_timeseries(store, subject, coords) if coords else None
print(store.subjects.loc[subject].to_dict())
viz.plot_timeseries(ts, title=f"{subject}: BOLD at region centres") if ts is not None else None"""),
    code("""ts.corr().round(2) if ts is not None else None"""),
    md("""
## Carpet plot
Every brain voxel's time series as one row (time left to right). Vertical stripes through
all rows are global events (head motion, scanner drift) that a model could latch onto."""),
    code("""viz.plot_carpet(store, subject)"""),
    md("""
## Is the planted signal visible? (synthetic cohort)
The correlation between `sex_a` and `sex_b` per subject, split by the label. Two separated
clouds mean the information is in the data; the model's job is to find it without being
told where to look."""),
    code("""
subjects = store.subject_ids[:max_subjects] if has_ground_truth else []
coupling = store.subjects.loc[subjects, ["sex", "site"]].assign(
    coupling=[viz.voxel_timeseries(store, s, coords)[["sex_a", "sex_b"]].corr().iloc[0, 1] for s in subjects])
px.strip(coupling, x="sex", y="coupling", color="site", title="sex_a–sex_b correlation per subject",
         height=360) if has_ground_truth else None"""),
    code("""
means = coupling.groupby("sex")["coupling"].mean() if has_ground_truth else {}
nb.save_results(
    run_dir, "data",
    metrics={"data/num_subjects": len(store), "data/num_sites": store.subjects["site"].nunique(),
             **{f"data/coupling_sex{int(k)}": float(v) for k, v in dict(means).items()}},
    artifacts={"store": store_path},
)"""),
])

# ---------------------------------------------------------------------------------------
# 02_pretrain/01_pretrain_simmim
# ---------------------------------------------------------------------------------------
PRETRAIN = ("pretrain", [
    md("""
# Pretrain a SwiFT encoder with SimMIM

**What.** Self-supervised pretraining: hide random blocks of a 4D fMRI window and train the
network to fill them in (SimMIM, *masked image modelling*). No labels are used.

**Why.** Labelled fMRI is scarce (hundreds of subjects for most questions) but unlabelled
scans are plentiful (UKB + ABCD + HCP: tens of thousands of hours). An encoder that can
predict hidden brain activity from its context has learned how brain signals are organised
in space and time — a starting point that fine-tuning on a small labelled set benefits from.

**The model.** SwiFT (*Swin fMRI Transformer*) cuts a window of frames into 4D patches
(tokens), and lets tokens exchange information inside small 4D windows that shift between
layers (Swin); merging patches between stages gives coarser, wider views. SimMIM adds a
learned *mask token* for hidden patches and a light decoder back to voxels; the loss is
the error on masked brain voxels only.

**Scale.** The same notebook is the multi-node job: on Perlmutter, `slurm/pretrain_deepspeed.sbatch`
runs it under `srun` with `strategy: deepspeed_stage_2`, `devices: 4`, `num_nodes: N`
(see `notebooks/params/perlmutter_ukb.yaml`)."""),
    code(IMPORTS + """
import pandas as pd
import yaml
from swiftlib.training import FitConfig, fit
from swiftlib.viz import training as viz"""),
    params("""
store_path: str = "data/demo/store_synthetic"  # store to pretrain on; several separated by commas are mixed
dataset_weights: str = "balanced"  # mixing of several stores: balanced or proportional
splits_dir: str = "data/demo/splits"  # split files are written here and reused
model: str = "swift_v2_5m"  # encoder preset (swiftlib.list_models())
model_overrides: dict = {"depths": [1, 1, 1, 1], "drop_path_rate": 0.0}  # preset fields to change; {} for none
mask_ratio: float = 0.5  # fraction of mask blocks hidden (0.2 to 0.8)
mask_strategy: str = "random"  # random, tube (same blocks in every frame) or block
sequence_length: int = 10  # frames per window (SwiFT: 20)
windows_per_subject: int = 1  # training windows drawn per subject and epoch; 0 for every window
batch_size: int = 8  # global batch: per device x devices x nodes x accumulation
lr: float = 1.5e-3  # peak learning rate (warm-up, then cosine decay)
weight_decay: float = 0.05  # AdamW weight decay
max_epochs: int = 2  # passes over the training subjects; 2 for a CPU smoke run
max_steps: int = -1  # stop after this many optimiser steps; -1 for no limit
accelerator: str = "cpu"  # cpu, gpu or auto
devices: int = 1  # devices per node (Perlmutter: 4)
num_nodes: int = 1  # nodes (SLURM)
strategy: str = "auto"  # auto, ddp, deepspeed_stage_2, deepspeed_stage_3
precision: str = "32-true"  # 32-true, bf16-mixed (A100/H100) or 16-mixed
accumulate_grad_batches: int = 1  # gradient accumulation steps
num_workers: int = 0  # DataLoader worker processes per device
checkpoint_every_n_steps: int = 0  # also write last.ckpt every n steps (limits what a crash loses); 0 at epoch ends only
progress_bar: bool = False  # Lightning progress bar (interactive use)
seed: int = 0  # random seed
run_dir: str = ""  # checkpoints, logs and results.json go here; swiftlib run fills it in"""),
    md("""
## The run configuration
Parameters become one `FitConfig` (data, task, trainer), checked before anything runs:
unknown settings, a batch size that does not divide over devices, or a mask ratio outside
0.2–0.8 fail here with a message."""),
    code("""
stores = [nb.resolve(s.strip()) for s in store_path.split(",") if s.strip()]
run_dir = nb.run_dir(run_dir, "pretrain")
config = FitConfig.from_dict({
    "kind": "pretrain", "run_dir": str(run_dir), "seed": seed,
    "data": {"store_path": stores[0] if len(stores) == 1 else stores, "dataset_weights": dataset_weights,
             "splits_dir": nb.resolve(splits_dir), "sequence_length": sequence_length,
             "windows_per_subject": windows_per_subject or None, "eval_stride_between_seq": 2.0,
             "batch_size": batch_size, "num_workers": num_workers, "pin_memory": accelerator != "cpu"},
    "task": {"model": model, "model_overrides": model_overrides, "mask_ratio": mask_ratio,
             "mask_strategy": mask_strategy, "optim": {"lr": lr, "weight_decay": weight_decay}, "seed": seed},
    "trainer": {"max_epochs": max_epochs, "max_steps": max_steps, "accelerator": accelerator, "devices": devices,
                "num_nodes": num_nodes, "strategy": strategy, "precision": precision,
                "accumulate_grad_batches": accumulate_grad_batches, "enable_progress_bar": progress_bar,
                "checkpoint_every_n_steps": checkpoint_every_n_steps or None},
})
print(yaml.safe_dump(config.to_dict(), sort_keys=False))"""),
    md("""
## Train
`fit` builds the data (subject-level train/val/test split, written once and reused),
the SimMIM task and a Lightning Trainer, trains, then scores the best checkpoint on the
validation and test subjects. It writes `checkpoints/best.ckpt` (lowest validation
reconstruction loss), `checkpoints/last.ckpt` (to resume), TensorBoard logs and
`config.yaml` into the run directory."""),
    code("""
result = fit(config)
pd.Series(result.metrics, name="value").round(4).to_frame()"""),
    md("""
## Did it learn anything?
`val/recon_loss` is the error on hidden brain voxels. `val/mean_predictor_loss` is the error
of a trivial guess (every hidden voxel = the mean of the visible ones); their ratio
`val/recon_ratio` below 1 means the model predicts more than the average intensity.
The curves are read back from the TensorBoard event files."""),
    code("""viz.plot_loss_curves(run_dir, title="SimMIM losses")"""),
    md("""
## Reconstructions
A validation window: the input, what the model saw (hidden blocks blank), its
reconstruction and the error on hidden voxels, at a few frames. Early in training the
reconstruction is a blurred average; with more data and steps it recovers structure."""),
    code("""
examples = viz.load_reconstructions(run_dir)
viz.plot_reconstructions(examples, index=0, num_frames=4)"""),
    code("""
nb.save_results(
    run_dir, "pretrain", metrics=result.metrics, parameters=config.to_dict(),
    artifacts={"best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint,
               "tensorboard": run_dir / "tensorboard", "reconstructions": run_dir / "reconstructions.pt",
               "config": run_dir / "config.yaml"},
    extra={"monitor": result.monitor},
)"""),
])

# ---------------------------------------------------------------------------------------
# 03_downstream/01_finetune
# ---------------------------------------------------------------------------------------
FINETUNE = ("finetune", [
    md("""
# Fine-tune on a label

**What.** Train the encoder plus a small head to predict a subject-level label (sex:
classification; age: regression) from fMRI windows, starting from pretrained weights.

**Why and how.** The head pools the encoder's last tokens into one embedding per window and
maps it to the label. Three modes trade data for flexibility:

| mode | trained | when |
|---|---|---|
| `linear_probe` | head only (encoder frozen) | tests what pretraining learned; very few subjects |
| `unfreeze` | head + the top `unfreeze_fraction` of the encoder | a few hundred subjects |
| `full` | everything | thousands of subjects |

`few_shot_n` trains on a subset of the training participants (e.g. 100) to measure how much
pretraining helps when labels are scarce. A subject's prediction is the average over all
its windows."""),
    code(IMPORTS + """
import pandas as pd
import yaml
from swiftlib.training import FitConfig, fit
from swiftlib.viz import training as viz"""),
    params("""
store_path: str = "data/demo/store_synthetic"  # store with the label
splits_dir: str = "data/demo/splits"  # split files (the same as pretraining: test subjects stay unseen)
label: str = "sex"  # label to predict (the store's label table lists them)
task: str = "classification"  # classification or regression (must match the label)
mode: str = "full"  # full, linear_probe (frozen encoder) or unfreeze (top fraction)
unfreeze_fraction: float = 0.2  # mode unfreeze: top fraction of block groups that train
few_shot_n: int = 0  # train on this many training participants; 0 for all
init_from: str = "papermill_runs/demo/pretrain/checkpoints/best.ckpt"  # encoder weights (SimMIM, SwiFT v1 or fine-tuned); "" for scratch
model: str = "swift_v2_5m"  # encoder preset; must match the checkpoint
model_overrides: dict = {"depths": [1, 1, 1, 1], "drop_path_rate": 0.0}  # preset fields to change; must match the checkpoint
head: str = "linear"  # linear or mlp
sequence_length: int = 10  # frames per window
windows_per_subject: int = 1  # training windows drawn per subject and epoch; 0 for every window
batch_size: int = 8  # global batch: per device x devices x nodes x accumulation
lr: float = 1e-3  # peak learning rate
layer_decay: float = 1.0  # per-layer learning-rate decay (0.75 is common for fine-tuning); 1 for none
weight_decay: float = 0.05  # AdamW weight decay
max_epochs: int = 3  # passes over the training subjects
max_steps: int = -1  # stop after this many optimiser steps; -1 for no limit
accelerator: str = "cpu"  # cpu, gpu or auto
devices: int = 1  # devices per node (Perlmutter: 4)
num_nodes: int = 1  # nodes (SLURM)
strategy: str = "auto"  # auto, ddp, deepspeed_stage_2
precision: str = "32-true"  # 32-true, bf16-mixed or 16-mixed
accumulate_grad_batches: int = 1  # gradient accumulation steps
num_workers: int = 0  # DataLoader worker processes per device
checkpoint_every_n_steps: int = 0  # also write last.ckpt every n steps (limits what a crash loses); 0 at epoch ends only
progress_bar: bool = False  # Lightning progress bar (interactive use)
seed: int = 0  # random seed
run_dir: str = ""  # checkpoints, logs and results.json go here; swiftlib run fills it in"""),
    code("""
run_dir = nb.run_dir(run_dir, "finetune")
config = FitConfig.from_dict({
    "kind": "finetune", "run_dir": str(run_dir), "seed": seed,
    "data": {"store_path": nb.resolve(store_path), "splits_dir": nb.resolve(splits_dir),
             "sequence_length": sequence_length, "windows_per_subject": windows_per_subject or None,
             "eval_stride_between_seq": 2.0, "batch_size": batch_size, "num_workers": num_workers,
             "few_shot_n": few_shot_n or None, "pin_memory": accelerator != "cpu"},
    "task": {"model": model, "model_overrides": model_overrides, "label": label, "task": task, "mode": mode,
             "unfreeze_fraction": unfreeze_fraction if mode == "unfreeze" else None, "head": head,
             "init_from": nb.resolve(init_from) or None, "seed": seed,
             "optim": {"lr": lr, "weight_decay": weight_decay, "layer_decay": None if layer_decay >= 1 else layer_decay}},
    "trainer": {"max_epochs": max_epochs, "max_steps": max_steps, "accelerator": accelerator, "devices": devices,
                "num_nodes": num_nodes, "strategy": strategy, "precision": precision,
                "accumulate_grad_batches": accumulate_grad_batches, "enable_progress_bar": progress_bar,
                "checkpoint_every_n_steps": checkpoint_every_n_steps or None},
})
print(yaml.safe_dump(config.to_dict(), sort_keys=False))"""),
    md("""
## Train
The checkpoint's *normalisation contract* (grid, voxel size, normalisation, TR range) is
checked against the store first: fine-tuning on differently preprocessed data is refused
with a message, because the encoder would see inputs unlike anything it was trained on.
The best epoch by the monitored validation metric (AUROC for classification, R² for
regression) is kept and scored on the test subjects."""),
    code("""
result = fit(config)
print("monitored:", result.monitor)
pd.Series(result.metrics, name="value").round(4).to_frame()"""),
    md("""
## Learning curves and validation predictions
Training loss per step and the validation metric per epoch; then the per-subject
validation predictions (mean over each subject's windows)."""),
    code("""
scalars = viz.read_scalars(run_dir)
viz.plot_loss_curves(scalars, tags=[t for t in scalars["tag"].unique() if t in ("train/loss_step", "val/loss", result.monitor)],
                     title="fine-tuning curves")"""),
    code("""
val = pd.read_csv(run_dir / "predictions_val.csv")
viz.plot_roc(val, title="validation ROC (per subject)") if task == "classification" else viz.plot_pred_vs_true(val)"""),
    code("""
nb.save_results(
    run_dir, "finetune", metrics=result.metrics, parameters=config.to_dict(),
    artifacts={"best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint,
               "tensorboard": run_dir / "tensorboard", "predictions_val": run_dir / "predictions_val.csv",
               "predictions_test": run_dir / "predictions_test.csv", "config": run_dir / "config.yaml"},
    extra={"monitor": result.monitor},
)"""),
])

# ---------------------------------------------------------------------------------------
# 03_downstream/02_evaluate
# ---------------------------------------------------------------------------------------
EVALUATE = ("finetune", [
    md("""
# Evaluate a fine-tuned checkpoint

**What.** Score a fine-tuned checkpoint on the held-out test subjects: a metrics table, the
ROC curve (classification) or predicted-vs-true scatter (regression), and a breakdown by
site.

**Why.** The test subjects were never used to train or to pick the checkpoint, so this is
the honest estimate. The per-site table shows whether the model works everywhere or only
on the sites that dominate training. The checkpoint carries its data configuration (store,
split file, window length), so the same subjects are evaluated without repeating it."""),
    code(IMPORTS + """
import pandas as pd
from swiftlib.training.evaluate import evaluate_checkpoint, metrics_by_group
from swiftlib.viz import training as viz"""),
    params("""
checkpoint: str = "papermill_runs/demo/finetune/checkpoints/best.ckpt"  # a fine-tuning checkpoint
split: str = "test"  # test (held-out subjects) or val
store_path: str = ""  # evaluate on this store instead; "" for the one the checkpoint was trained on
splits_dir: str = ""  # split files; "" for the ones the run used
group_by: str = "site"  # subject column for the breakdown table
batch_size: int = 8  # windows per forward pass
accelerator: str = "cpu"  # cpu or gpu
run_dir: str = ""  # results.json goes here; swiftlib run fills it in"""),
    code("""
checkpoint = nb.resolve(checkpoint)
run_dir = nb.run_dir(run_dir, "evaluate")"""),
    code("""
res = evaluate_checkpoint(checkpoint, split=split, store_path=nb.resolve(store_path) or None,
                          splits_dir=nb.resolve(splits_dir) or None, batch_size=batch_size, accelerator=accelerator)
print(f"{res.config.label} ({res.config.task}), {len(res.predictions)} {split} subjects")
pd.Series(res.metrics, name="value").round(4).to_frame()"""),
    md("""
## Per-subject predictions
One row per subject: the averaged output over its windows, the target and the prediction."""),
    code("""res.predictions.head(10)"""),
    code("""
(viz.plot_roc(res.predictions, title=f"{split} ROC (per subject)") if res.config.task == "classification"
 else viz.plot_pred_vs_true(res.predictions, color_by=group_by))"""),
    md("""
## By site
The same metrics within each site. With a handful of test subjects per site these numbers
are noisy (and AUROC is undefined where a site has one class); on real cohorts a site far
below the others points at a scanner or protocol difference."""),
    code("""
by_group = metrics_by_group(res, by=group_by)
by_group.round(3)"""),
    code("""
predictions_csv = run_dir / f"predictions_{split}.csv"
res.predictions.to_csv(predictions_csv, index=False)
nb.save_results(
    run_dir, "finetune", metrics=res.metrics,
    parameters={"checkpoint": checkpoint, "split": split, "label": res.config.label, "task": res.config.task},
    artifacts={"checkpoint": checkpoint, "predictions": predictions_csv},
    extra={"by_" + group_by: by_group.reset_index().to_dict(orient="records")},
)"""),
])

NOTEBOOK_SOURCES = {
    "01_data/01_make_synthetic_cohort.ipynb": MAKE_COHORT,
    "01_data/02_preprocess_nifti.ipynb": PREPROCESS,
    "01_data/03_explore_cohort.ipynb": EXPLORE,
    "02_pretrain/01_pretrain_simmim.ipynb": PRETRAIN,
    "03_downstream/01_finetune.ipynb": FINETUNE,
    "03_downstream/02_evaluate.ipynb": EVALUATE,
}


def main(argv=None) -> int:
    return sync(NOTEBOOK_SOURCES, NOTEBOOKS, "tools/make_notebooks.py", argv)


if __name__ == "__main__":
    sys.exit(main())
