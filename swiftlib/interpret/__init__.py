"""Interpretation: embeddings you can explore and brain-map attributions you can check.

``swiftlib.interpret.embeddings`` (extract, tables, probes, site leakage, benchmark adapter)
and ``swiftlib.interpret.attributions`` (captum maps → MNI NIfTI, region summaries, sanity
checks). Both take their settings as a small config (:class:`AttributionConfig`,
:class:`EmbeddingConfig`) or as its fields by keyword, and start from one helper,
:func:`load_inference_inputs` (checkpoint + store + subjects → model and windows). Heavy
libraries (captum, scikit-learn, nilearn) load on first use.
"""

from __future__ import annotations

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
from swiftlib.interpret.config import AttributionConfig, EmbeddingConfig, InferenceConfig
from swiftlib.interpret.embeddings import (
    EmbeddingAdapter,
    diagnostics_metrics,
    extract_embeddings,
    load_embeddings,
    probe_scores,
    site_leakage,
)
from swiftlib.interpret.inference import (
    InferenceInputs,
    InferenceModel,
    load_inference_inputs,
    load_inference_model,
)

__all__ = [
    "InferenceConfig",
    "AttributionConfig",
    "EmbeddingConfig",
    "InferenceModel",
    "InferenceInputs",
    "load_inference_model",
    "load_inference_inputs",
    "extract_embeddings",
    "load_embeddings",
    "probe_scores",
    "site_leakage",
    "diagnostics_metrics",
    "EmbeddingAdapter",
    "METHODS",
    "AtlasError",
    "Attributions",
    "attribute",
    "ground_truth",
    "randomised_model",
    "recovery_auroc",
    "region_preference",
    "summarise_by_region",
]
