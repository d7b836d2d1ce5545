"""One registry per kind of thing (mixers, blocks, tasks, benchmark targets, suite kinds).

A new mixer or task is one module plus one ``@REGISTRY.register("name")`` line; YAML then names
it.  Unknown names raise :class:`UnknownNameError`, which carries the closest valid names so the
suite validator can say "did you mean ...?".
"""
from __future__ import annotations

import difflib
import importlib
import sys
from typing import Any, Callable, Dict, Generic, Iterator, List, Optional, TypeVar

T = TypeVar("T")


def closest(name: str, candidates, n: int = 3) -> List[str]:
    """The valid names closest to ``name`` (for did-you-mean messages)."""
    return difflib.get_close_matches(str(name), [str(c) for c in candidates], n=n, cutoff=0.5)


class UnknownNameError(KeyError):
    """A name that is not registered; ``suggestions`` holds the closest valid ones."""

    def __init__(self, what: str, name: str, valid: List[str]):
        self.what, self.name, self.valid = what, name, sorted(valid)
        self.suggestions = closest(name, valid)
        super().__init__(str(self))

    def __str__(self) -> str:  # KeyError would repr() the message
        hint = f" — did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        return f"unknown {self.what} {self.name!r}{hint} (valid: {', '.join(self.valid)})"


class Registry(Generic[T]):
    """Name -> object.  Entries may be given lazily as ``"module:attr"`` strings."""

    def __init__(self, what: str):
        self.what = what
        self._entries: Dict[str, Any] = {}
        self._help: Dict[str, str] = {}
        self._origin: Dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, help=help or (obj.__doc__ or "").strip().split("\n")[0])
            return obj
        return deco

    def add(self, name: str, obj: Any, help: str = "") -> None:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._entries[name] = obj
        self._help[name] = help
        self._origin[name] = _origin(obj)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(self.what, name, list(self._entries))
        obj = self._entries[name]
        if isinstance(obj, str) and ":" in obj:  # lazy "module:attr"
            mod, attr = obj.split(":", 1)
            obj = getattr(importlib.import_module(mod), attr)
            self._entries[name] = obj
        return obj

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def names(self) -> List[str]:
        return sorted(self._entries)

    def origin(self, name: str) -> str:
        """The module that provides ``name`` (``harness.kinds.task``, ``models.s6``, a plugin's module): the
        reference of suite keys lists the project's own names, not a plugin's or a test's."""
        return self._origin.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _origin(obj: Any) -> str:
    """Where a registered object comes from: the module of a lazy ``"module:attr"``, of a class or function,
    else of the code that called :meth:`Registry.add` / :meth:`Registry.register`."""
    if isinstance(obj, str) and ":" in obj:
        return obj.split(":", 1)[0]
    if hasattr(obj, "__qualname__") and getattr(obj, "__module__", None):
        return obj.__module__
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""
