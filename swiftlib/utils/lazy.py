"""Package names that load on first use (PEP 562), so ``import swiftlib.<package>`` stays
cheap: a data or interpretation notebook does not pay for torch, Lightning or scikit-learn
until it uses something that needs them."""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict, exports: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public ``name`` lives in module
    ``exports[name]`` (a full dotted name); a loaded name is cached in ``namespace`` (the
    package's ``globals()``), so the module is imported once."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
