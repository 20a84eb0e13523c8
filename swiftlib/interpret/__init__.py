"""Interpretation: embeddings you can explore and brain-map attributions you can check.

``swiftlib.interpret.embeddings`` (extract, tables, probes, site leakage, benchmark adapter)
and ``swiftlib.interpret.attributions`` (captum maps → MNI NIfTI, region summaries, sanity
checks). Both take their settings as a small config (:class:`AttributionConfig`,
:class:`EmbeddingConfig`) or as its fields by keyword, and start from one helper,
:func:`load_inference_inputs` (checkpoint + store + subjects → model and windows). Every
name loads its module on first use; heavy libraries (torch, captum, scikit-learn, nilearn)
load with the functions that need them.
"""

from __future__ import annotations

from swiftlib.utils.lazy import lazy_exports

# name -> module, loaded on first use (PEP 562): ``import swiftlib.interpret`` stays free of
# torch, captum, scikit-learn and nilearn until a function is called
_LAZY = {
    "InferenceConfig": "swiftlib.interpret.config",
    "AttributionConfig": "swiftlib.interpret.config",
    "EmbeddingConfig": "swiftlib.interpret.config",
    "InferenceModel": "swiftlib.interpret.inference",
    "InferenceInputs": "swiftlib.interpret.inference",
    "load_inference_model": "swiftlib.interpret.inference",
    "load_inference_inputs": "swiftlib.interpret.inference",
    "extract_embeddings": "swiftlib.interpret.embeddings",
    "load_embeddings": "swiftlib.interpret.embeddings",
    "probe_scores": "swiftlib.interpret.embeddings",
    "site_leakage": "swiftlib.interpret.embeddings",
    "diagnostics_metrics": "swiftlib.interpret.embeddings",
    "EmbeddingAdapter": "swiftlib.interpret.embeddings",
    "METHODS": "swiftlib.interpret.attributions",
    "AtlasError": "swiftlib.interpret.attributions",
    "Attributions": "swiftlib.interpret.attributions",
    "attribute": "swiftlib.interpret.attributions",
    "ground_truth": "swiftlib.interpret.attributions",
    "randomised_model": "swiftlib.interpret.attributions",
    "recovery_auroc": "swiftlib.interpret.attributions",
    "region_preference": "swiftlib.interpret.attributions",
    "summarise_by_region": "swiftlib.interpret.attributions",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports("swiftlib.interpret", globals(), _LAZY)
