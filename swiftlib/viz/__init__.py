"""Plots for notebooks (nilearn conventions: data in, ``axes=None, title=None,
output_file=None``, the figure returned).

Submodules are imported where used so ``import swiftlib.viz`` stays light:

- :mod:`swiftlib.viz.data`: brains and time series of a store (mid-slices, nilearn ortho
  views, voxel time series, carpet plot, label/site tables, ground-truth regions);
- :mod:`swiftlib.viz.training`: loss curves from TensorBoard logs, SimMIM reconstructions,
  ROC curves, predicted-vs-true scatter, per-site tables;
- :mod:`swiftlib.viz.brain`, :mod:`swiftlib.viz.embeddings`: attribution maps and
  embeddings (interpretation notebooks).
"""

from __future__ import annotations

import importlib

__all__ = ["data", "training", "brain", "embeddings"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"swiftlib.viz.{name}")
    raise AttributeError(f"module 'swiftlib.viz' has no attribute {name!r}")
