"""The old name of :mod:`swiftlib.interpret.inference`, kept so that code importing
``swiftlib.interpret._model`` (e.g. ``tests/science/test_training_science.py``) still runs.
Import from ``swiftlib.interpret.inference`` (or ``swiftlib.interpret``) instead."""

from swiftlib.interpret.inference import (  # noqa: F401
    PRECISIONS,
    InferenceModel,
    autocast_context,
    load_inference_model,
    resolve_device,
)
from swiftlib.interpret.subjects import check_subjects  # noqa: F401
