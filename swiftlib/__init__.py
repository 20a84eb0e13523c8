"""swiftlib: a notebook-first research environment for SwiFT v2 4D fMRI transformers.

``import swiftlib`` stays light: models (torch) load on first use of
``swiftlib.create_model`` / ``swiftlib.list_models``.
"""

from __future__ import annotations

__all__ = ["__version__", "create_model", "list_models"]

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("create_model", "list_models"):
        from swiftlib import models

        return getattr(models, name)
    raise AttributeError(f"module 'swiftlib' has no attribute {name!r}")
