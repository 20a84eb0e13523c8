"""Interpretation: embeddings you can explore and brain-map attributions you can check.

``swiftlib.interpret.embeddings`` (extract, probe, site leakage, benchmark adapter) and
``swiftlib.interpret.attributions`` (captum maps → MNI NIfTI, region summaries, sanity
checks). Heavy libraries (captum, scikit-learn, nilearn) load on first use.
"""

from __future__ import annotations

from swiftlib.interpret._model import InferenceModel, load_inference_model
from swiftlib.interpret.attributions import (
    METHODS,
    AtlasError,
    Attributions,
    attribute,
    ground_truth,
    randomised_model,
    recovery_auroc,
    region_preference,
    summarise_by_region,
)
from swiftlib.interpret.embeddings import (
    EmbeddingAdapter,
    diagnostics_metrics,
    extract_embeddings,
    load_embeddings,
    probe_scores,
    site_leakage,
)

__all__ = [
    "InferenceModel", "load_inference_model",
    "extract_embeddings", "load_embeddings", "probe_scores", "site_leakage", "diagnostics_metrics",
    "EmbeddingAdapter",
    "METHODS", "AtlasError", "Attributions", "attribute", "ground_truth", "randomised_model",
    "recovery_auroc", "region_preference", "summarise_by_region",
]
