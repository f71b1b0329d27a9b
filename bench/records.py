"""Job records: one JSON file per finished job, written atomically, and their loading.

A record is the only source of tables and figures. Schema (``RECORD_FORMAT`` 1):
``key, sweep, status ("ok" | "failed" | "diverged": no score, a non-finite loss at ``diverged_at_step`` |
"skipped": not run, a job it waits for failed), attempts, error, k, combination, primary, repeat, grid,
teacher_keys, config, metric, score (on the task's first evaluation split), scores {split: {metric: value}}, timings {queue_wait, setup,
train, eval, total}, device, slot, provenance {versions, git_commit, host, pid, finished}``;
ok records add ``score_split, n_params, fit (steps, seconds per stage), teacher_work, torch_device, cuda_visible_devices, threads`` and
``provenance.started``, ``paths`` (teachers root and cache: enough to rerun the job from its record) and ``predictions`` {split: encoded array of the predicted class per
example, in split order; empty for tasks not scored by classes (lm)}, read with ``decode_array``; failed and skipped ones add ``errors`` (one per attempt) and ``traceback`` (where
the job, or for a skipped one the failed job it waited for, raised), ``error_kind`` (error, oom, crash,
timeout, diverged) and have null scores and timings.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

RECORD_FORMAT = 1


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it, even after a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def temp_owner(path: Path) -> int | None:
    """The process id that a temp file of ``atomic_write_bytes`` belongs to."""
    try:
        return int(path.name.rsplit(".", 3)[-2].split("-")[0])
    except (IndexError, ValueError):
        return None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def records_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "records"


def record_path(results_dir: Path, key: str) -> Path:
    return records_dir(results_dir) / f"{key}.json"


def record_problem(path: Path) -> tuple[dict | None, str | None]:
    """(the record, None) for a sound record file, else (None, what is wrong with it)."""
    try:
        rec = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable ({e})"
    if not isinstance(rec, dict) or rec.get("key") != path.stem or "status" not in rec:
        return None, "not a record of this job (no status, or its key differs from the file name)"
    return rec, None


def load_records(results_dir: Path, quarantine: bool = False) -> dict[str, dict]:
    """All records of a sweep by key. A damaged file (truncated, corrupt, not a record) is skipped
    with a warning; with ``quarantine`` (the driver, holding the sweep's lock) it is also moved to
    ``results/<sweep>/quarantine/`` so that its job runs again."""
    import sys
    import time

    out: dict[str, dict] = {}
    folder = records_dir(results_dir)
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.json")):
        rec, problem = record_problem(p)
        if rec is not None:
            out[rec["key"]] = rec
            continue
        if quarantine:
            dest = Path(results_dir) / "quarantine" / f"{p.name}.{int(time.time())}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            print(f"warning: {p}: {problem}; moved to {dest}, the job runs again", file=sys.stderr)
        else:
            print(f"warning: {p}: {problem}; skipped", file=sys.stderr)
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the bench checkout (with '+dirty' when it has changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of python and of the packages that shape results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("bench", "torch", "transformers", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def provenance() -> dict:
    """Where and with what a record was produced."""
    return {"versions": versions(), "git_commit": git_commit(), "host": platform.node(), "pid": os.getpid()}


def encode_array(values: Any) -> dict:
    """A small integer array as JSON: zlib-compressed little-endian bytes, base64 (a CoLA dev set
    of 1,043 predictions takes well under 1 kB)."""
    import base64
    import zlib

    import numpy as np

    a = np.asarray(values)
    dtype = "<i1" if a.size == 0 or (a.min() >= -128 and a.max() < 128) else "<i4"
    return {"dtype": dtype, "n": int(a.size),
            "zlib_base64": base64.b64encode(zlib.compress(a.astype(dtype).tobytes(), 9)).decode()}


def decode_array(encoded: dict) -> Any:
    """The numpy array of ``encode_array``."""
    import base64
    import zlib

    import numpy as np

    a = np.frombuffer(zlib.decompress(base64.b64decode(encoded["zlib_base64"])), dtype=encoded["dtype"])
    if a.size != encoded["n"]:
        raise ValueError(f"expected {encoded['n']} values, decoded {a.size}")
    return a
