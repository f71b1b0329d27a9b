"""User-facing errors: one clear message, exit code 2, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """An error caused by the user's input (spec, CLI, data path); the CLI prints it and exits 2."""


class SpecError(UserError):
    """A sweep spec is invalid: names the file, the field and what was expected."""

    def __init__(self, file: str, field: str, expected: str):
        self.file, self.field, self.expected = file, field, expected
        where = f"field '{field}'" if field else "spec"
        super().__init__(f"{file}: {where}: {expected}")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """Return table[name] or raise a UserError listing the choices and the closest one."""
    try:
        return table[name]
    except KeyError:
        raise UserError(
            f"unknown {what} '{name}'{did_you_mean(name, table)}; "
            f"expected one of: {', '.join(sorted(table))}"
        ) from None
