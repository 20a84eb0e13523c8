# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: embed
# ---

# %% [markdown]
# # Explore embeddings
#
# **What.** A trained encoder turns every fMRI window into one vector, its *embedding*. This
# notebook extracts the embeddings of a checkpoint for a store's subjects, draws them in 2D
# (PCA and UMAP) and measures what they encode.
#
# **Why.** Before trusting a model we want to know what its representation has picked up: the
# labels we care about — or the scanner. Two numbers answer this:
#
# * a **linear probe** and a **kNN probe** per label: a simple model trained on the embeddings
#   (cross-validated, grouped by participant). AUROC (classification, chance 0.5) or R²
#   (regression, chance ≤ 0) says how much of the label is *readable* from the embedding;
# * a **site-leakage check**: how well the acquisition *site* can be predicted, against chance
#   (1 / number of sites) and a permutation null. A representation that encodes the site lets a
#   downstream model "predict" a label through which scanner a subject was measured on.
#
# **How to read the scatter.** Each dot is a subject (or one window). Colour by a label: if
# colours separate along an axis, that label is a main direction of variation. Colour by site:
# separated sites are a warning sign (check the leakage score).

# %%
from swiftlib import notebook as nb
from swiftlib.data import open_store
from swiftlib.demo import explain
from swiftlib.interpret import embeddings as emb
from swiftlib.viz import embeddings as viz

print("swiftlib", nb.setup())

# %% tags=["parameters"]
checkpoint: str = "papermill_runs/demo/finetune/checkpoints/best.ckpt"  # fine-tuned or SimMIM
store_path: str = "data/demo/store_synthetic"  # store (must satisfy the checkpoint's contract)
split: str = "all"  # subjects to embed: all, train, val or test
batch_size: int = 8  # windows per forward pass
precision: str = "fp32"  # fp32 or bf16 (autocast)
device: str = "cpu"  # cpu, cuda or auto
cv_folds: int = 5  # cross-validation folds of the probes
site_permutations: int = 50  # permutations of the site-leakage null; 0 skips it
color_by: str = "site"  # first colour of the static figures (any column)
interactive: bool = True  # widgets in a live kernel; headless runs get static figures
run_dir: str = ""  # embeddings and results.json go here; swiftlib run fills it in

# %%
checkpoint = nb.resolve(checkpoint)
store_path = nb.resolve(store_path)
interactive = interactive and not run_dir  # swiftlib run fills run_dir in: headless, static figures
run_dir = nb.run_dir(run_dir, "embed")
out_path = run_dir / "embeddings_window.parquet"

# %% [markdown]
# ## Extract
# One forward pass per window; the window-level table is written to parquet in chunks (a rerun
# resumes), and the subject-level table is the mean over each subject's windows.

# %%
windows = emb.extract_embeddings(checkpoint, store_path, split=split, level="window",
                                 out_path=out_path, batch_size=batch_size, precision=precision,
                                 device=device)
windows = emb.split_column(windows, open_store(store_path), checkpoint=checkpoint)
subjects = emb.to_subject_level(windows)
print(f"{len(windows)} windows of {len(subjects)} subjects, "
      f"{len(emb.embedding_columns(windows))} features")
subjects.head()

# %% [markdown]
# ## What the embedding encodes
# Probes are fitted on all subjects with cross-validation. If the checkpoint was fine-tuned on a
# label, that label's training subjects are among them, so its probe is optimistic; the other
# labels (and `null_label`, which should stay near chance) are a fair read-out.

# %%
probes = emb.probe_scores(subjects, cv=cv_folds)
leak = emb.site_leakage(subjects, cv=cv_folds, num_permutations=site_permutations)
print(emb.describe_site_leakage(leak))
probes.round(3)

# %%
viz.plot_probe_scores(probes, leak)

# %% [markdown]
# ## Explore
# PCA keeps the directions of largest variance (linear, distances meaningful); UMAP keeps
# neighbourhoods (non-linear, good at showing clusters, global distances not meaningful).
# In JupyterLab the dropdowns switch colour, projection, level and split; in a headless run
# (`swiftlib run`) the same plots appear as static figures.

# %%
tables = {("subject", "all"): subjects, ("window", "all"): windows}
tables.update({("subject", s): subjects[subjects.split == s].reset_index(drop=True)
               for s in ("train", "val", "test") if (subjects.split == s).sum() >= 5})
colors = [color_by] + [c for c in ["site", "split", *open_store(store_path).labels]
                       if c != color_by]
explorer = viz.embedding_explorer(tables, colors=colors, interactive=interactive)
explorer

# %%
html_path = run_dir / "embedding_pca.html"
viz.plot_embedding(subjects, color=colors, output_file=html_path)  # a colour-by menu

# %% [markdown]
# ## What the result means
# The probes in a sentence: which labels the embeddings carry, and whether scanner site leaks.

# %%
print(explain("embed", emb.diagnostics_metrics(probes, leak, split=split)))

# %%
subjects.to_parquet(run_dir / "embeddings_subject.parquet", index=False)
probes.to_csv(run_dir / "probes.csv", index=False)
nb.save_results(
    run_dir, "embed", metrics=emb.diagnostics_metrics(probes, leak, split=split),
    parameters={"checkpoint": checkpoint, "store_path": store_path, "split": split,
                "precision": precision, "cv_folds": cv_folds,
                "site_permutations": site_permutations},
    artifacts={"embeddings_window": out_path,
               "embeddings_subject": run_dir / "embeddings_subject.parquet",
               "probes": run_dir / "probes.csv", "html": html_path, "checkpoint": checkpoint},
    notebook="notebooks/04_interpret/01_explore_embeddings.ipynb",
)
