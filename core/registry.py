"""Name → implementation registries for model backends, kernels, methods and schemes.

Entries register with a decorator, or lazily as "module:attribute" so that listing names
never imports torch. Unknown names raise a V2MError that lists the available ones.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .errors import V2MError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            self._items[name] = obj
            return obj

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register `target` ("package.module:attr"), imported on first `get(name)`."""
        self._lazy[name] = target

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._lazy))

    def get(self, name: str) -> Any:
        if name not in self._items and name in self._lazy:
            module_name, attr = self._lazy[name].split(":")
            self._items[name] = getattr(importlib.import_module(module_name), attr)
        if name not in self._items:
            raise V2MError(f"unknown {self.kind} '{name}'", f"available: {', '.join(self.names())}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._lazy
