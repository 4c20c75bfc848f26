"""Registries: the named extensions of one kind (reward sources, judges, pair strategies, generation backends).

Each entry is an importable `module:attribute`, imported on first use. So the recipe schema (config, the lowest
layer) takes its accepted names from a registry without importing the stages that implement them, and a
heavy optional dependency (vLLM, llm-blender) loads only when its entry is used. Adding an extension is one
module plus one line in its stage's registry table.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")


class UnknownEntryError(ValueError):
    """A name no registry entry has; the message lists the known names."""


class Registry(Generic[T]):
    """Named `module:attribute` references of one kind, resolved lazily and cached."""

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        for name, target in entries.items():
            module, sep, attr = target.partition(":")
            if not sep or not module or not attr:
                raise ValueError(f"{kind} {name!r}: target {target!r} is not 'module:attribute'")
        self.kind = kind
        self._entries = dict(entries)
        self._loaded: dict[str, T] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def literal(self) -> Any:
        """`Literal[...]` of the names, for a recipe field that must name one entry."""
        return Literal[self.names]  # type: ignore[valid-type]

    def target(self, name: str) -> str:
        """The `module:attribute` an entry names."""
        self._check(name)
        return self._entries[name]

    def get(self, name: str) -> T:
        """The entry's object (its module imported on first use)."""
        self._check(name)
        if name not in self._loaded:
            module, _, attr = self._entries[name].partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._loaded[name] = obj
        return self._loaded[name]

    def _check(self, name: str) -> None:
        if name not in self._entries:
            raise UnknownEntryError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
