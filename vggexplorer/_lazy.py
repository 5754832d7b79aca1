"""Lazy re-exports for package ``__init__`` modules (PEP 562 module ``__getattr__``).

A package lists which of its modules defines which public name; a name is imported the first time it is
used, so importing a package costs nothing (importing ``vggexplorer.core.run`` does not import torch).
This module imports nothing of the project and may be used by every package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def attach(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``; ``exports`` maps module → names."""
    where = {name: module for module, names in exports.items() for name in names}
    # a name equal to one of the package's modules would be replaced by that module once it is imported
    # (the import system sets the package attribute): such names cannot be re-exported
    clash = sorted(set(where) & set(exports))
    if clash:
        raise ValueError(f"{package}: {clash} name both a module and an exported name")

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        return value

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
