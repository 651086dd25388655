"""One registry per extension point: names users type -> objects (or lazy import thunks)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from diffsearch.errors import DiffsearchError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\+[a-z][a-z0-9_]*)*$")  # snake_case; joints such as timesteps+architecture


class Registry(Generic[T]):
    """A validated name -> object mapping; unknown names raise an error listing the valid ones.

    Entries may be registered as objects or as ``"package.module:attribute"`` strings that are
    imported on first use, so that registries of heavy components stay cheap to import.
    """

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or (kind[:-1] + "ies" if kind.endswith("y") else kind + "s")
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be snake_case ([a-z][a-z0-9_]*), or such names joined by +")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if obj is None:
            def decorator(target: T) -> T:
                self._entries[name] = target
                return target
            return decorator
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The entry called ``name``, importing it if it was registered lazily."""
        if name not in self._entries:
            raise DiffsearchError(
                f"unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self.names())}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
