# ---
# jupyter:
#   kernelspec:
#     display_name: swiftlib
#     language: python
#     name: swiftlib
#   swiftlib:
#     kind: data
# ---

# %% [markdown]
# # Preprocess NIfTI / BIDS derivatives into a store
#
# **What.** Turn 4D NIfTI scans that are already in MNI space (e.g. fMRIPrep outputs,
# `*_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz`) into a subject store.
#
# **Why.** Training reads short windows of consecutive frames thousands of times; a store
# keeps each subject in one chunked, compressed file on a fixed grid, with a brain mask,
# normalisation statistics and the exact geometry back to MNI space (so attribution maps
# can be written back as NIfTI later).
#
# **Real data** is a parameter file, never an edit of this notebook, e.g.
#
# `swiftlib run notebooks/01_data/02_preprocess_nifti.ipynb -f notebooks/params/perlmutter_ukb.yaml`
#
# The defaults preprocess the synthetic cohort's NIfTI export and check that the result is
# identical, bit for bit, to the store the generator wrote directly.

# %%
import numpy as np

from swiftlib import notebook as nb
from swiftlib.data.preprocess import PreprocessConfig, preprocess
from swiftlib.data.store import open_store
from swiftlib.viz import data as viz

print("swiftlib", nb.setup())

# %% tags=["parameters"]
input_path: str = "data/demo/synthetic_bids"  # 4D NIfTI, a folder of them or BIDS derivatives (MNI)
out_dir: str = "data/demo/store_from_nifti"  # store to write (a rerun resumes)
overwrite: bool = False  # start the store again when it holds other settings (else refused)
phenotype: str = "data/demo/synthetic_bids/participants.tsv"  # phenotypes (CSV/TSV); "" for none
dataset: str = "synthetic"  # dataset adapter: UKB, ABCD, HCP, ABIDE, EMBARC, synthetic, custom
voxel_size: float = 8.0  # store voxel size in mm (the demo cohort: 8; SwiFT: 2)
grid: list = [24, 24, 24]  # store grid D, H, W (the demo cohort: 24³; SwiFT: 96, 96, 96)
normalisation: str = "psc"  # psc (% signal; the demo), zscore_global (SwiFT), zscore_voxel, none
mask: str = "auto"  # brain mask: auto, mni, or the path of a mask NIfTI
min_frames: int = 1  # refuse scans shorter than this many frames
tr: float = 0.0  # TR in seconds; 0 reads it from the sidecar or the header
target_tr: float = 0.0  # resample time to this TR in seconds (e.g. 0.8); 0 keeps each scan's TR
denoise: str = ""  # fMRIPrep confound strategy: simple, scrubbing, compcor; "" for none
task: str = ""  # keep only BIDS task-<task> scans (e.g. rest); "" for all
assume_mni: bool = False  # skip the MNI-space check (you vouch for the space)
num_jobs: int = 2  # subjects preprocessed in parallel
compare_to_store: str = "data/demo/store_synthetic"  # bit-identity check against it; "" to skip
run_dir: str = ""  # results.json goes here; swiftlib run fills it in

# %%
input_path, out_dir = nb.resolve(input_path), nb.resolve(out_dir)
phenotype = nb.resolve(phenotype) or None
compare_to_store = nb.resolve(compare_to_store)
run_dir = nb.run_dir(run_dir, "data")
config = PreprocessConfig(voxel_size=voxel_size, grid=tuple(grid), normalisation=normalisation,
                          mask=mask, min_frames=min_frames, tr=tr or None, assume_mni=assume_mni,
                          n_jobs=num_jobs, target_tr=target_tr or None, denoise=denoise or None,
                          task=task or None)
config

# %% [markdown]
# ## Preprocess
# Per scan: load and validate (4D, finite, enough frames, a plausible TR, MNI space),
# reorient, put on the store grid (an exact crop/pad when the scan is on the same voxel
# lattice, else resampling), compute a brain mask, optionally regress out fMRIPrep's
# nuisance signals (`denoise`) and resample time to one TR (`target_tr`, so that a window
# of 20 frames is the same number of seconds for every scanner), z-score over brain voxels
# and time, and write. Failures are listed with their reason; the other subjects are
# stored. Warnings name scans worth a look (a sidecar TR that contradicts the header, runs
# of one participant at different TRs, a scan covering less than half of the MNI brain).
# A rerun into the same `out_dir` resumes with the same settings and refuses other ones.

# %%
report = preprocess(
    input_path, out_dir, phenotype=phenotype, dataset=dataset, config=config, overwrite=overwrite
)
print(f"written {len(report.written)}, skipped (done before) {len(report.skipped)}, "
      f"failed {len(report.failed)}, warnings {len(report.warnings)}")
print("\n".join(report.warnings))
report.failed

# %%
store = open_store(out_dir)
store.summary()

# %% [markdown]
# ## Same data, two paths
# The synthetic generator writes its store directly; here the same scans went through
# NIfTI files and the real-data path. Equal arrays mean the preprocessing changes nothing
# it should not (no resampling, no off-by-one voxel shifts, same normalisation).

# %%
reference = open_store(compare_to_store) if compare_to_store else None
identical = [bool(np.array_equal(store.read_subject(s), reference.read_subject(s)))
             for s in store.subject_ids] if reference is not None else []
print(f"identical to {compare_to_store}: {sum(identical)}/{len(identical)} subjects"
      if reference is not None else "no reference store given")

# %%
subject = store.subject_ids[0]
viz.plot_ortho(store, subject, frame=0);

# %%
nb.save_results(
    run_dir, "data",
    metrics={"data/written": len(report.written), "data/skipped": len(report.skipped),
             "data/failed": len(report.failed), "data/num_subjects": len(store),
             **({"data/identical_to_reference": float(all(identical))} if identical else {})},
    parameters=report.config,
    artifacts={"store": out_dir, "report": f"{out_dir}/{report.history}",
               "qc": f"{out_dir}/qc.tsv"},
    status="ok" if report.ok and all(identical) else "failed",
    error=None if report.ok and all(identical) else
    f"failed subjects: {sorted(report.failed)}; identical: {sum(identical)}/{len(identical)}",
)
