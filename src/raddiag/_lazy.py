"""Lazy package exports (PEP 562), so that ``raddiag --help`` and light commands do not pay
for importing torch, MONAI or matplotlib before a handler needs them."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` resolving ``name`` from submodule ``exports[name]`` on first use."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
