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


_NETWORK_TYPES = {
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectTimeoutError",
    "NewConnectionError",
    "NameResolutionError",
    "MaxRetryError",
    "gaierror",
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
}
_NETWORK_TEXT = (
    "couldn't connect to",
    "outgoing traffic has been disabled",
    "name or service not known",
    "temporary failure in name resolution",
    "network is unreachable",
    "failed to resolve",
    "offline mode is enabled",
    "hf_hub_offline",
)


def is_network_error(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a failed attempt to reach the network,
    e.g. transformers or datasets asking the hub on an offline machine: a retry would only repeat it."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).lower()
        if any(t.__name__ in _NETWORK_TYPES for t in type(cur).__mro__) or any(s in text for s in _NETWORK_TEXT):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


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
            f"unknown {what} '{name}'{did_you_mean(name, table)}; expected one of: {', '.join(sorted(table))}"
        ) from None
