"""brainmarks plugin: swiftlib checkpoints as the suite's model ``swiftlib``.

This file is a portion of the ``brainmarks.models`` namespace package (no ``__init__.py`` in
``brainmarks/`` or ``brainmarks/models/``): installed with swiftlib, it sits beside the
suite's own model modules, and the suite's registry imports it when it discovers plugins
(``pkgutil.iter_modules(brainmarks.models.__path__)``). Everything it returns is built in
:mod:`swiftlib.interpret.brainmarks`; here it is only registered, with the suite's own
``Embeddings`` type. Use::

    python -m brainmarks.main_probe ... model=swiftlib model_kwargs.ckpt_path=best.ckpt
"""

from brainmarks.models.base import Embeddings
from brainmarks.models.registry import register_model

from swiftlib.interpret.brainmarks import create_swiftlib_model


@register_model("swiftlib")
def swiftlib_model(ckpt_path=None, **kwargs):
    """``(SwiftlibTransform, SwiftlibWrapper)`` for a swiftlib checkpoint; ``kwargs``:
    ``precision``, ``max_windows``, ``mask_path``, ``target_tr``, ``template_mismatch``,
    ``sequence_length`` (see :func:`swiftlib.interpret.brainmarks.create_swiftlib_model`)."""
    return create_swiftlib_model(ckpt_path, embeddings_cls=Embeddings, **kwargs)
