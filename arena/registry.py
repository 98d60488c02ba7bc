"""A name -> class registry filled by a decorator, shared by mixers and tasks.

A registry owns one package (e.g. `arena.mixers`). On first lookup it imports every module of that package
(via pkgutil), so adding a component is one new file with `@REGISTRY.register("name")` on its class:
no central list to edit. Modules whose names start with `_` or that are listed in `skip` are not scanned.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from arena.errors import choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, skip: tuple[str, ...] = ()):
        self.kind = kind  # "mixer" or "task": used in error messages
        self.package = package
        self.skip = set(skip)
        self._entries: dict[str, type[T]] = {}
        self._scanned = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorate(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            cls.registry_name = name
            return cls

        return decorate

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_") and info.name not in self.skip:
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        self._scan()
        if name not in self._entries:
            raise choice_error(f"{self.kind}", name, self._entries)
        return self._entries[name]
