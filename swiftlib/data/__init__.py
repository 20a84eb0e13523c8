"""swiftlib.data: the subject store, dataset registry, windows, splits, mixing and loaders.

Importing this package is cheap: the synthetic cohort, preprocessing, augmentation
(MONAI) and the Lightning DataModule load on first use.
"""

from __future__ import annotations

import importlib

from swiftlib.data.geometry import StoreGeometry
from swiftlib.data.registry import (
    CustomAdapter,
    DatasetAdapter,
    LabelSpec,
    PhenotypeError,
    get_dataset,
    list_datasets,
    register_dataset,
)
from swiftlib.data.splits import (
    LeakageError,
    SplitError,
    Splits,
    check_leakage,
    few_shot_subset,
    load_or_create_splits,
    make_splits,
    subjects_of,
)
from swiftlib.data.store import StoreError, StoreWriter, SubjectStore, open_store
from swiftlib.data.windows import Batch, Sample, WindowDataset, collate_samples

_LAZY = {
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

__all__ = [
    "open_store",
    "SubjectStore",
    "StoreWriter",
    "StoreError",
    "StoreGeometry",
    "LabelSpec",
    "DatasetAdapter",
    "CustomAdapter",
    "PhenotypeError",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "Sample",
    "Batch",
    "WindowDataset",
    "collate_samples",
    "Splits",
    "SplitError",
    "LeakageError",
    "make_splits",
    "load_or_create_splits",
    "check_leakage",
    "few_shot_subset",
    "subjects_of",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'swiftlib.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
