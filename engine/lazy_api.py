"""Lazily imported public names (PEP 562): a package lists ``{name: module}`` and gets the
module-level ``__getattr__`` / ``__dir__`` that import a name's module on first use, so importing
the package itself loads nothing heavy (torch, open_clip)."""
from __future__ import annotations

import importlib


def lazy_api(package: str, table: dict[str, str], namespace: dict):
    """(``__getattr__``, ``__dir__``) for ``package``, whose globals are ``namespace``; each name in
    ``table`` comes from the module it maps to and is cached in ``namespace`` once loaded."""

    def __getattr__(name: str):
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
