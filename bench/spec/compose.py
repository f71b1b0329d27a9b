"""A spec document before validation: read (bounded, never executed), composed with
``extends = "base.toml"``, changed by ``--set key.path=value`` from the command line, and written
back as TOML (``results/<sweep>/spec.toml``: the spec a sweep was run with).

``extends`` names another spec, relative to the file that names it; this file's tables are merged
into it key by key (a table merges into a table, anything else replaces), so a variant states only
what differs. Chains are followed up to ``MAX_EXTENDS`` files; a cycle is an error naming it.
``--set teacher.lr=3e-4`` sets one value as TOML reads it (a bare word that is not TOML is a
string: ``--set task.data=../glue``), creating tables on the way, before validation, so a typo
gets the same one-line error as in a file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from bench.core.config import PathsSpec
from bench.core.errors import SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_SPEC_BYTES = 1 << 20  # a spec file is a page of TOML
MAX_EXTENDS = 8


def read_spec_text(path: str | os.PathLike) -> bytes:
    """The bytes of a spec file: a regular file of at most MAX_SPEC_BYTES. Opened non-blocking and
    checked with fstat, so a FIFO or a device never blocks the command; raises SpecError."""
    import stat

    file = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise SpecError(file, "", f"cannot read the spec file ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise SpecError(file, "", f"expected a TOML file, got {kind}")
        if st.st_size > MAX_SPEC_BYTES:
            raise SpecError(file, "", f"expected a spec of at most {MAX_SPEC_BYTES:,} bytes, got {st.st_size:,}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(file, "", f"cannot read the spec file ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(file, "", f"expected a spec of at most {MAX_SPEC_BYTES:,} bytes")
    return data


def _parse(path: str | os.PathLike) -> dict:
    file = str(path)
    try:
        text = read_spec_text(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(file, "", f"expected a UTF-8 text file ({e.reason} at byte {e.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(file, "", f"invalid TOML: {e}") from None
    except RecursionError:
        raise SpecError(file, "", "invalid TOML: arrays or tables nested too deeply") from None


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into ``base``: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_document(path: str | os.PathLike, chain: tuple[str, ...] = ()) -> dict:
    """The spec document of ``path`` with its ``extends`` chain merged in (``extends`` removed)."""
    file = str(path)
    data = _parse(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise SpecError(file, "extends", f"expected the path of a base spec (relative to this file), got {base!r}")
    target = (Path(file).parent / base).resolve()
    here = str(Path(file).resolve())
    if str(target) in (*chain, here):
        raise SpecError(file, "extends", f"expected no cycle, got {' -> '.join((*chain, here, str(target)))}")
    if len(chain) >= MAX_EXTENDS:
        raise SpecError(file, "extends", f"expected a chain of at most {MAX_EXTENDS} specs")
    if not target.is_file():
        raise SpecError(file, "extends", f"expected an existing spec file, got {base!r} ({target} does not exist)")
    return deep_merge(read_document(target, (*chain, here)), data)


def _value(text: str) -> Any:
    """A --set value as TOML reads it, or the text itself when it is not a TOML value."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_sets(data: dict, sets: list[str] | tuple[str, ...]) -> dict:
    """``data`` with each ``key.path=value`` of ``sets`` applied (tables created as needed)."""
    out = json.loads(json.dumps(data, default=str))  # a deep copy of plain TOML values
    for item in sets:
        path, eq, text = item.partition("=")
        keys = path.strip().split(".")
        if not eq or not all(k.strip() for k in keys):
            raise SpecError("command line", f"--set {item}", "expected KEY.PATH=VALUE, e.g. --set teacher.lr=3e-4")
        node = out
        for i, key in enumerate(keys[:-1]):
            node = node.setdefault(key.strip(), {})
            if not isinstance(node, dict):
                raise SpecError("command line", f"--set {item}", f"'{'.'.join(keys[: i + 1])}' is a value, not a table")
        node[keys[-1].strip()] = _value(text.strip())
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"a spec holds only finite numbers, got {v}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ValueError(f"not a TOML value: {v!r}")


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "-_" for c in k) else json.dumps(k)


def dump_toml(data: dict, header: str = "") -> str:
    """``data`` (a spec document) as TOML text: top-level values, then one [table] per top-level
    table, whose nested tables are written inline (``params = { hidden = [32] }``)."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, body in data.items():
        if isinstance(body, dict):
            lines.append(f"\n[{_key(name)}]")
            lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def resolved_document(data: dict, run: dict, paths: PathsSpec) -> dict:
    """A spec document as one run used it, readable from any folder: the command line's [run]
    options merged in, and ``[paths]`` replaced by the run's (``paths``: absolute output roots and
    the project root). Data, tokenizer and weights stay as written, since they are in the keys:
    they resolve from the stated root, as they did for the run."""
    out = deep_merge(data, {"run": run} if run else {})
    out["paths"] = dataclasses.asdict(paths)  # so the copy writes where the run wrote wherever it is read from
    return out
