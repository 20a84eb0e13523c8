"""swiftlib.data: the subject store, dataset registry, windows, splits, mixing and loaders.

Importing this package is cheap: every name loads its module on first use (PEP 562), so a
data notebook that reads a store or preprocesses images never imports torch (the windows),
MONAI (augmentation) or Lightning (the DataModule).
"""

from __future__ import annotations

from swiftlib.utils.lazy import lazy_exports

# name -> module: everything loads on first use (PEP 562), so ``from swiftlib.data.store
# import open_store`` or ``swiftlib.data.synthetic`` does not pay for torch (windows), h5py
# or Lightning it does not use
_LAZY = {
    "StoreGeometry": "swiftlib.data.geometry",
    "CustomAdapter": "swiftlib.data.registry",
    "DatasetAdapter": "swiftlib.data.registry",
    "LabelSpec": "swiftlib.data.registry",
    "PhenotypeError": "swiftlib.data.registry",
    "get_dataset": "swiftlib.data.registry",
    "list_datasets": "swiftlib.data.registry",
    "register_dataset": "swiftlib.data.registry",
    "LeakageError": "swiftlib.data.splits",
    "SplitError": "swiftlib.data.splits",
    "Splits": "swiftlib.data.splits",
    "check_leakage": "swiftlib.data.splits",
    "few_shot_subset": "swiftlib.data.splits",
    "load_or_create_splits": "swiftlib.data.splits",
    "make_splits": "swiftlib.data.splits",
    "subjects_of": "swiftlib.data.splits",
    "StoreError": "swiftlib.data.store",
    "StoreWriter": "swiftlib.data.store",
    "SubjectStore": "swiftlib.data.store",
    "open_store": "swiftlib.data.store",
    "Batch": "swiftlib.data.windows",
    "Sample": "swiftlib.data.windows",
    "WindowDataset": "swiftlib.data.windows",
    "collate_samples": "swiftlib.data.windows",
    "make_synthetic_cohort": "swiftlib.data.synthetic",
    "preprocess": "swiftlib.data.preprocess",
    "AugmentConfig": "swiftlib.data.augment",
    "FrameAugment": "swiftlib.data.augment",
    "build_augment": "swiftlib.data.augment",
    "MixedWindowDataset": "swiftlib.data.mixing",
    "MixingSampler": "swiftlib.data.mixing",
    "DataConfig": "swiftlib.data.datamodule",
    "FMRIDataModule": "swiftlib.data.datamodule",
    "PairDataset": "swiftlib.data.pairs",
    "Layout": "swiftlib.data.layouts",
    "get_layout": "swiftlib.data.layouts",
    "list_layouts": "swiftlib.data.layouts",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports("swiftlib.data", globals(), _LAZY)
