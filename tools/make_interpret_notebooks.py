"""Write the interpretation notebooks (notebooks/04_interpret) from the cell lists below.

The reviewable source of ``01_explore_embeddings.ipynb`` and ``02_brain_attributions.ipynb``
(committed without outputs). ``python tools/make_interpret_notebooks.py`` writes them;
``--check`` fails when a committed notebook differs. Same rules as tools/make_notebooks.py
(STYLE 14–17): title → imports → one ``parameters`` cell → derived values → swiftlib calls
→ plots → ``nb.save_results``; no ``def``/``class``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "notebooks" / "04_interpret"

from nbgen import IMPORTS, code, md, params, sync  # noqa: E402,F401  (shared cell helpers)

EMBED = ("embed", [
    md("""
# Explore embeddings

**What.** A trained encoder turns every fMRI window into one vector, its *embedding*. This
notebook extracts the embeddings of a checkpoint for a store's subjects, draws them in 2D
(PCA and UMAP) and measures what they encode.

**Why.** Before trusting a model we want to know what its representation has picked up: the
labels we care about — or the scanner. Two numbers answer this:

* a **linear probe** and a **kNN probe** per label: a simple model trained on the embeddings
  (cross-validated, grouped by participant). AUROC (classification, chance 0.5) or R²
  (regression, chance ≤ 0) says how much of the label is *readable* from the embedding;
* a **site-leakage check**: how well the acquisition *site* can be predicted, against chance
  (1 / number of sites) and a permutation null. A representation that encodes the site lets a
  downstream model "predict" a label through which scanner a subject was measured on.

**How to read the scatter.** Each dot is a subject (or one window). Colour by a label: if
colours separate along an axis, that label is a main direction of variation. Colour by site:
separated sites are a warning sign (check the leakage score)."""),
    code(IMPORTS + """
from swiftlib.data import open_store
from swiftlib.interpret import embeddings as emb
from swiftlib.viz import embeddings as viz"""),
    params("""
checkpoint: str = "papermill_runs/demo/finetune/checkpoints/best.ckpt"  # fine-tuning or SimMIM checkpoint
store_path: str = "data/demo/store_synthetic"  # store (must satisfy the checkpoint's contract)
split: str = "all"  # subjects to embed: all, train, val or test
batch_size: int = 8  # windows per forward pass
precision: str = "fp32"  # fp32 or bf16 (autocast)
device: str = "cpu"  # cpu, cuda or auto
cv_folds: int = 5  # cross-validation folds of the probes
site_permutations: int = 50  # permutations of the site-leakage null; 0 skips it
color_by: str = "site"  # first colour of the static figures (any column)
interactive: bool = True  # widgets in a live kernel; headless runs get static figures
run_dir: str = ""  # embeddings and results.json go here; swiftlib run fills it in"""),
    code("""
checkpoint = nb.resolve(checkpoint)
store_path = nb.resolve(store_path)
interactive = interactive and not run_dir  # swiftlib run fills run_dir in: headless, static figures
run_dir = nb.run_dir(run_dir, "embed")
out_path = run_dir / "embeddings_window.parquet\""""),
    md("""
## Extract
One forward pass per window; the window-level table is written to parquet in chunks (a rerun
resumes), and the subject-level table is the mean over each subject's windows."""),
    code("""
windows = emb.extract_embeddings(checkpoint, store_path, split=split, level="window", out_path=out_path,
                                 batch_size=batch_size, precision=precision, device=device)
windows = emb.split_column(windows, open_store(store_path), checkpoint=checkpoint)
subjects = emb.to_subject_level(windows)
print(f"{len(windows)} windows of {len(subjects)} subjects, {len(emb.embedding_columns(windows))} features")
subjects.head()"""),
    md("""
## What the embedding encodes
Probes are fitted on all subjects with cross-validation. If the checkpoint was fine-tuned on a
label, that label's training subjects are among them, so its probe is optimistic; the other
labels (and `null_label`, which should stay near chance) are a fair read-out."""),
    code("""
probes = emb.probe_scores(subjects, cv=cv_folds)
leak = emb.site_leakage(subjects, cv=cv_folds, num_permutations=site_permutations)
print(f"site: balanced accuracy {leak['balanced_acc']:.2f} vs chance {leak['chance']:.2f} (permutation p = {leak['p_value']})")
probes.round(3)"""),
    code("""viz.plot_probe_scores(probes, leak)"""),
    md("""
## Explore
PCA keeps the directions of largest variance (linear, distances meaningful); UMAP keeps
neighbourhoods (non-linear, good at showing clusters, global distances not meaningful).
In JupyterLab the dropdowns switch colour, projection, level and split; in a headless run
(`swiftlib run`) the same plots appear as static figures."""),
    code("""
tables = {("subject", "all"): subjects, ("window", "all"): windows}
tables.update({("subject", s): subjects[subjects.split == s].reset_index(drop=True)
               for s in ("train", "val", "test") if (subjects.split == s).sum() >= 5})
colors = [color_by] + [c for c in ["site", "split", *open_store(store_path).labels] if c != color_by]
explorer = viz.embedding_explorer(tables, colors=colors, interactive=interactive)
explorer"""),
    code("""
html_path = run_dir / "embedding_pca.html"
viz.plot_embedding(subjects, color=color_by, output_file=html_path)"""),
    code("""
subjects.to_parquet(run_dir / "embeddings_subject.parquet", index=False)
probes.to_csv(run_dir / "probes.csv", index=False)
nb.save_results(
    run_dir, "embed", metrics=emb.diagnostics_metrics(probes, leak, split=split),
    parameters={"checkpoint": checkpoint, "store_path": store_path, "split": split, "precision": precision,
                "cv_folds": cv_folds, "site_permutations": site_permutations},
    artifacts={"embeddings_window": out_path, "embeddings_subject": run_dir / "embeddings_subject.parquet",
               "probes": run_dir / "probes.csv", "html": html_path, "checkpoint": checkpoint},
    notebook="notebooks/04_interpret/01_explore_embeddings.ipynb",
)"""),
])

ATTRIBUTE = ("attribute", [
    md("""
# Brain attributions

**What.** An *attribution map* says, voxel by voxel, how much the input contributed to the
model's prediction for one subject. We compute it for every window of a few subjects,
average over time and windows, and put the result back into MNI space as a NIfTI image.

**Integrated Gradients (IG)** (Sundararajan et al., 2017) walks in `n_steps` from a
*baseline* input to the real input and adds up the gradients along the way; the
attributions of all voxels sum to the change of the output between baseline and input. The
default baseline here is each voxel's *mean over the window* ("no fluctuation"): the
synthetic labels live in the dynamics (amplitude, connectivity), not in the static anatomy.
`baseline="background"` (every voxel at the out-of-brain value, "no brain at all") is the
library default for anatomy-like questions. *Saliency* is the plain gradient,
*gradient × input* its product with the input, *occlusion* hides blocks of voxels and
watches the output drop, and *IG + SmoothGrad²* averages IG over noisy copies.

**How to read the maps.** With `aggregate="signed"` (default) positive voxels push the
output up consistently across windows and subjects, and effects whose sign changes from
window to window cancel; with `aggregate="abs"` bright voxels are where the output is
sensitive in either direction — which, for methods that multiply by the input, also lights
up wherever the *input* is strong. A map is *not* a statistical test and can be
confidently wrong, which is why the notebook ends with **sanity checks**:

1. *planted-region recovery* — on the synthetic cohort we know which regions carry the
   label's signal; the voxel-wise AUROC of the map against that mask (1 = every planted voxel
   ranks above every other brain voxel, 0.5 = no preference);
2. *model randomisation* (Adebayo et al., 2018) — the same method on a model with random
   weights. If the map barely changes, it shows the input (e.g. where the signal is strong),
   not what the model learned: the recovery AUROC of the random model must fall to ≈ 0.5."""),
    code(IMPORTS + """
from swiftlib.data import open_store
from swiftlib.interpret import attributions as attr
from swiftlib.interpret.embeddings import resolve_split
from swiftlib.viz import brain as viz"""),
    params("""
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
device: str = "cpu"  # cpu, cuda or auto
run_dir: str = ""  # maps, HTML and results.json go here; swiftlib run fills it in"""),
    code("""
checkpoint = nb.resolve(checkpoint)
store_path = nb.resolve(store_path)
run_dir = nb.run_dir(run_dir, "attribute")
store = open_store(store_path)
subjects = resolve_split(store, split, checkpoint)[:num_subjects]
baseline_value = float(baseline) if baseline.lstrip("-").replace(".", "", 1).isdigit() else baseline
settings = dict(method=method, baseline=baseline_value, aggregate=aggregate, n_steps=n_steps,
                internal_batch_size=internal_batch_size, windows=windows_per_subject or None, device=device)
print(subjects)"""),
    md("""
## Attribute
Each window gives a map shaped like the input, `(D, H, W, T)`; the maps are averaged over
frames and windows per subject, then over subjects (and per target class)."""),
    code("""
result = attr.attribute(checkpoint, store, subjects, **settings)
paths = result.save(run_dir / "maps", space="source")
group_img = result.to_nifti("group", space="source")
print(f"{result.params['num_windows']} windows; label {result.params['label']!r}; predictions {result.predictions}")"""),
    md("""
## Where the model looks
Glass brain: the maximum through the brain along each axis. Stat map: three planes through
the peak, over the MNI152 template. Only the top 20 % of voxels are coloured."""),
    code("""viz.plot_glass_brain(group_img, signed=aggregate == "signed", title=f"{method} ({aggregate}), {len(subjects)} subjects")"""),
    code("""viz.plot_stat_map(group_img, title="peak of the group map")"""),
    code("""viz.plot_stat_map(group_img, display_mode="z", cut_coords=6, title="axial slices")"""),
    md("""
## Through time
Mean attribution per frame of the window: does the model rely on some frames (e.g. the
window's edges, where shifted windows wrap) more than others?"""),
    code("""viz.plot_time_curves(result.time_curves, tr=store.tr(subjects[0]), title="attribution over the window")"""),
    md("""
## By region
The ground-truth regions of the synthetic cohort (`ratio_to_brain` > 1: the model looks there
more than on average). Give `atlas_path` for any atlas image in MNI space on the same grid
(other grids are refused rather than silently resampled)."""),
    code("""
gt = attr.ground_truth(store)
regions = attr.summarise_by_region(group_img, gt["regions"], mask_img=gt["brain_mask"])
atlas_table = attr.summarise_by_region(group_img, nb.resolve(atlas_path), mask_img=gt["brain_mask"]) if atlas_path else None
viz.plot_region_summary(regions, title="attribution by ground-truth region")"""),
    md("""
## Sanity checks
Recovery of the checkpoint's label's planted regions, the same on a randomised copy of the
model, and the preference for planted over unlabelled network regions (≈ 0.5 = none)."""),
    code("""
label = result.params["label"]
checks = {}
if sanity_checks and attr.ground_truth_mask(store, label).any():
    randomised = attr.attribute(attr.randomised_model(checkpoint, device=device), store, subjects, **settings)
    checks = {"trained_auroc": attr.recovery_auroc(group_img, store, label),
              "randomised_auroc": attr.recovery_auroc(randomised.to_nifti("group"), store, label),
              "trained_preference": attr.region_preference(group_img, store, [label])}
elif sanity_checks:
    checks = {"planted_preference": attr.region_preference(group_img, store)}
checks"""),
    code("""
html_path = run_dir / "attribution_view.html"
viz.view_img_html(group_img, output_file=html_path, title=f"{method} attribution ({label})")"""),
    code("""
regions.to_csv(run_dir / "regions.csv", index=False)
nb.save_results(
    run_dir, "attribute", metrics={f"{split}/{k}": v for k, v in checks.items()},
    parameters={"checkpoint": checkpoint, "store_path": store_path, "subjects": subjects, **settings},
    artifacts={"group_map": paths["group"], "time_curves": paths["time_curves"], "regions": run_dir / "regions.csv",
               "html": html_path, "checkpoint": checkpoint},
    notebook="notebooks/04_interpret/02_brain_attributions.ipynb",
)"""),
])

NOTEBOOKS = {"01_explore_embeddings.ipynb": EMBED, "02_brain_attributions.ipynb": ATTRIBUTE}


def main(argv=None) -> int:
    return sync(NOTEBOOKS, OUT, "tools/make_interpret_notebooks.py", argv)


if __name__ == "__main__":
    sys.exit(main())
