"""Named registries: a method, backbone or architecture is added by registering it under a name.

The idea of timm's ``@register_model`` and solo-learn's ``METHODS`` dict: code that picks
an implementation by name (configs, the command line, ``cxrlens models list``) looks it up
here, so adding one is one registered class or function and every listing follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> entry`` with optional descriptive ``info`` per entry, in registration order.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny", paper="none")
    ... def tiny(): ...
    >>> MODELS.get("tiny") is tiny and MODELS.info("tiny") == {"paper": "none"}
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict] = {}

    def add(self, name: str, entry: T, **info: object) -> T:
        """Register ``entry`` under ``name`` (a name can be registered once)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        self._info[name] = dict(info)
        return entry

    def register(self, name: str, **info: object) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry, **info)

    def get(self, name: str) -> T:
        """The entry called ``name``; a ValueError listing the known names otherwise."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def info(self, name: str) -> dict:
        self.get(name)
        return self._info[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
