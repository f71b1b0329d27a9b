"""Tables of tasks, model families and methods that installed packages extend (docs/extending.md).

A table is a read-only mapping: the built-in entries of bench, then, on first read, the entry
points of its group (``bench.tasks``, ``bench.models``, ``bench.methods``) of every installed
distribution, each one object of the table's type under the entry point's name. Nothing registers
itself when imported, and a spec only ever names an entry: code runs only if it was installed.
A plugin that cannot be loaded, is of the wrong type or reuses a built-in name stops the run with
one line naming the distribution.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from bench.core.errors import UserError

T = TypeVar("T")


class Table(Mapping[str, T], Generic[T]):
    """Built-in entries plus the entry points of ``group``, loaded once on first read."""

    def __init__(self, group: str, kind: type[T], builtin: dict[str, T]):
        self.group, self.kind, self.builtin = group, kind, dict(builtin)
        self._all: dict[str, T] | None = None

    def _entries(self) -> dict[str, T]:
        if self._all is None:
            found = dict(self.builtin)
            for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
                where = f"{ep.dist.name if ep.dist else '?'} ({ep.value})"
                if ep.name in self.builtin:
                    raise UserError(f"plugin {where}: {self.group} entry {ep.name!r} clashes with a built-in one")
                try:
                    obj = ep.load()
                except Exception as e:  # a broken plugin: say which, not a traceback from importlib
                    raise UserError(
                        f"plugin {where}: cannot load {self.group} entry {ep.name!r}: {type(e).__name__}: {e}"
                    ) from None
                if not isinstance(obj, self.kind):
                    raise UserError(
                        f"plugin {where}: {self.group} entry {ep.name!r} is a {type(obj).__name__}, "
                        f"expected a {self.kind.__module__}.{self.kind.__name__}"
                    )
                named = getattr(obj, "name", ep.name)
                if named != ep.name:
                    raise UserError(
                        f"plugin {where}: {self.group} entry {ep.name!r} holds one named {named!r}; "
                        f"expected the entry point's name"
                    )
                found[ep.name] = obj
            self._all = found
        return self._all

    def __getitem__(self, name: str) -> T:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())
