"""Job records: one JSON file per finished job, written atomically, and their loading.

A record is the only source of tables and figures. Schema (``RECORD_FORMAT`` 1):
``record_format`` (``RECORD_FORMAT``; absent in records written before it was stamped), ``key,
sweep, status ("ok" | "failed" | "diverged": no score, a non-finite loss at
``diverged_at_step`` | "skipped": not run, a job it waits for failed), attempts, error, k,
combination, primary, repeat, grid, teacher_keys, config, metric, score (on the task's first
evaluation split), scores {split: {metric: value}}, timings {queue_wait, setup, train, eval,
total, worker_startup: the worker's one-off seconds before this job, outside total; absent before it
existed}, device, slot, provenance {versions, git_commit, host, pid, slurm {job_id, node, cpus, gpus} or
null, finished}``, precision (``run.precision`` the job ran at; absent in records written before
it existed: fp32), numerics (``core.numerics.NUMERICS_VERSION`` of the bench that made the record;
absent in records written before it existed: unknown, which ``bench run`` does not resume without
``--mixed-numerics``); ok records add
``score_split, n_params, fit (steps, seconds per stage), teacher_work, torch_device,
cuda_visible_devices, threads`` and ``provenance.started``, ``paths`` (teachers root and cache:
enough to rerun the job from its record) and ``predictions`` {split: encoded array of the
predicted class per example, in split order; empty for tasks not scored by classes (lm)}, read
with ``decode_array``, and ``student`` (null, or where the student is saved with
``run.save_students``: {path, format: transformers | state-dict}; absent in records written
before it; with ``best`` a student not kept has null) with ``timings.save`` when it was saved;
a job trained in a stack (``run.stack``) adds ``stack`` {size, index, train_seconds: the whole
stack's}, its ``timings.train`` and ``fit.seconds`` being the stack's divided by its size;
failed and skipped ones add ``errors`` (one per attempt) and ``traceback`` (where the job, or
for a skipped one the failed job it waited for, raised),
``error_kind`` (error, oom, crash, timeout, diverged) and have null scores and timings.

A record file is **sound** (``record_problem``) when it is a regular file of at most
MAX_JSON_BYTES nested at most MAX_JSON_DEPTH deep (``read_json``), holds the fields above that
its status requires with their types (``schema_problem``: every record key, status, k,
combination, repeat, grid, teacher_keys, config; ok ones metric, a numeric score, scores,
timings with a total, decodable predictions; failed and skipped ones an error string; none but
ok ones a score), its key is its file name and the ``stable_hash`` of its own config, and it
sits where the plan puts that key (same k, combination, primary, repeat, grid, teachers).
Anything else is damaged: skipped with a named warning by readers, quarantined by the driver.

A teacher's ``meta.json`` (``teacher_meta_problem``: ``_TEACHER_META`` required, ``_TEACHER_OPTIONAL``
checked when present) is written by ``training.teachers.store_teacher``, with ``numerics`` as a
record has it (absent in teachers stored before it existed: unknown); a teacher trained in a
stack (``run.stack``, image tasks at fp32) adds ``stack`` {size, index, train_seconds: the whole
stack's}, as a student's record does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.core.config import PRECISIONS
from bench.core.files import MAX_JSON_BYTES, atomic_write_json, read_json
from bench.core.hashing import stable_hash

log = logging.getLogger(__name__)

RECORD_FORMAT = 1
STATUSES = ("ok", "failed", "diverged", "skipped")
DESIGN_FILE = "design.json"  # results/<sweep>/design.json: an adaptive design's state (study.adaptive)


def records_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "records"


def record_path(results_dir: Path, key: str) -> Path:
    return records_dir(results_dir) / f"{key}.json"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_numerics(v: Any) -> bool:
    """A numerics version: this bench's (``NUMERICS_VERSION``) or any other, earlier or later
    (such a record is sound and reported; ``bench run`` refuses to resume it)."""
    return _is_int(v) and v >= 1


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


# field -> (test, what is expected): every record, then per status (absent optional fields pass)
_COMMON = {
    "key": (lambda v: isinstance(v, str), "a string"),
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "k": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "combination": (
        lambda v: isinstance(v, list) and all(_is_int(i) and i >= 0 for i in v),
        "a list of teacher indices",
    ),
    "repeat": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "grid": (lambda v: isinstance(v, dict), "an object"),
    "teacher_keys": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of keys"),
    "config": (lambda v: isinstance(v, dict), "an object"),
}
_OPTIONAL = {
    "record_format": (lambda v: v == RECORD_FORMAT, f"{RECORD_FORMAT}, the record format this bench reads"),
    "primary": (lambda v: v is None or _is_int(v), "a teacher index or null"),
    "attempts": (lambda v: v is None or _is_int(v), "an integer"),
    "error": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "numerics": (_is_numerics, "a numerics version (an integer >= 1)"),
}
_SCORES = (
    lambda v: (
        isinstance(v, dict) and all(isinstance(m, dict) and all(_is_number(x) for x in m.values()) for m in v.values())
    ),
    "{split: {metric: number}}",
)
_BY_STATUS = {
    "ok": {
        "metric": (lambda v: isinstance(v, str), "a string"),
        "score": (_is_number, "a number"),
        "scores": _SCORES,
        "timings": (
            lambda v: (
                isinstance(v, dict)
                and _is_number(v.get("total"))
                and all(x is None or _is_number(x) for x in v.values())
            ),
            "{stage: seconds} with a total",
        ),
    },
    "failed": {"error": (lambda v: isinstance(v, str), "the error, a string")},
    "skipped": {"error": (lambda v: isinstance(v, str), "why it was not run, a string")},
    "diverged": {},
}
_OK_OPTIONAL = {
    "score_split": (lambda v: isinstance(v, str), "a split name"),
    "n_params": (lambda v: v is None or _is_int(v), "an integer"),
    "predictions": (lambda v: isinstance(v, dict), "{split: encoded array}"),
    "student": (
        lambda v: (
            v is None or isinstance(v, dict) and isinstance(v.get("path"), str) and isinstance(v.get("format"), str)
        ),
        "null or {path, format}",
    ),
}
_UNSCORED = {  # a record of a job without a score has none
    "score": (lambda v: v is None, "null (no score without status ok)"),
    "scores": (lambda v: v is None, "null (no scores without status ok)"),
    "diverged_at_step": (lambda v: v is None or _is_int(v), "an integer or null"),
    "errors": (lambda v: v is None or isinstance(v, list), "a list of errors"),
    "traceback": (lambda v: v is None or isinstance(v, str), "a string or null"),
}


def _field_problem(obj: dict, required: dict, optional: dict) -> str | None:
    """The first field of ``obj`` missing from ``required`` or failing its test (``optional``
    fields are tested when present), as 'field ...: expected ..., got ...'; None if all pass."""
    for name, (test, expected) in required.items():
        if name not in obj:
            return f"field '{name}' missing"
        if not test(obj[name]):
            return f"field '{name}': expected {expected}, got {_kind(obj[name])}"
    for name, (test, expected) in optional.items():
        if name in obj and not test(obj[name]):
            return f"field '{name}': expected {expected}, got {_kind(obj[name])}"
    return None


_TEACHER_META = {
    "key": (lambda v: isinstance(v, str), "a string"),
    "seed": (_is_int, "an integer"),
    "config": (lambda v: isinstance(v, dict) and isinstance(v.get("model"), dict), "an object with a model"),
    "metric": (lambda v: isinstance(v, str), "a string"),
    "score": (_is_number, "a number"),
    "scores": _SCORES,
    "timings": (
        lambda v: (
            isinstance(v, dict)
            and all(_is_number(v.get(t)) for t in ("train", "eval"))
            and all(x is None or _is_number(x) for x in v.values())
        ),
        "{stage: seconds} with train and eval",
    ),
}
_TEACHER_OPTIONAL = {
    "n_params": (lambda v: v is None or _is_int(v), "an integer"),
    "files": (lambda v: isinstance(v, dict), "{file: size and sha256}"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "numerics": (_is_numerics, "a numerics version (an integer >= 1)"),
}


def teacher_meta_problem(meta: Any, key: str) -> str | None:
    """What makes a teacher's meta.json unusable (not an object, a missing or mistyped field the
    report or a student reads, another teacher's key), or None."""
    if not isinstance(meta, dict):
        return f"meta.json is not a JSON object (got {_kind(meta)})"
    problem = _field_problem(meta, _TEACHER_META, _TEACHER_OPTIONAL)
    if problem is None and meta["key"] != key:
        problem = "it describes another teacher (its key differs)"
    return None if problem is None else f"meta.json: {problem}"


def schema_problem(rec: Any) -> str | None:
    """What makes ``rec`` not a record of the schema above (the first problem found: a missing
    field, a wrong type, fields that contradict each other, predictions that do not decode), or
    None."""
    if not isinstance(rec, dict):
        return f"not a JSON object (got {_kind(rec)})"
    status = rec.get("status")
    by_status = _BY_STATUS.get(status, {}) if isinstance(status, str) else {}  # a list as status: a problem, no crash
    problem = _field_problem(
        rec, {**_COMMON, **by_status}, {**_OPTIONAL, **(_OK_OPTIONAL if status == "ok" else _UNSCORED)}
    )
    if problem is not None:
        return problem + (f" (status {status})" if status in STATUSES else "")
    if not len(rec["combination"]) == len(rec["teacher_keys"]) == rec["k"]:
        return f"k={rec['k']} but {len(rec['combination'])} teacher indices and {len(rec['teacher_keys'])} teacher keys"
    if rec["teacher_keys"] != rec["config"].get("teachers"):
        return "field 'teacher_keys' differs from the config's teachers"
    for split, encoded in (rec.get("predictions") or {}).items() if status == "ok" else ():
        try:
            decode_array(encoded)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            return f"field 'predictions.{split}': not an encoded array ({e})"
    return None


def write_record(path: str | os.PathLike, record: dict) -> dict:
    """The one way a job record is written (by the worker when its job ends, by the driver for a
    failed or skipped job): stamped with ``RECORD_FORMAT``, checked against the schema (a bug that
    would write an unsound record raises here instead of quarantining it at the next run), then
    written atomically. Returns what was written."""
    rec = {"record_format": RECORD_FORMAT, **record}
    problem = schema_problem(rec)
    if problem is not None:
        raise ValueError(f"refusing to write the record {path}: {problem}")
    atomic_write_json(path, rec)
    return rec


def record_problem(path: Path, job: Any = None) -> tuple[dict | None, str | None]:
    """(the record, None) for a sound record file, else (None, what is wrong with it). Sound: a
    regular file (``read_json``'s bounds) holding a record of the schema (``schema_problem``)
    whose key is its file name and the ``stable_hash`` of its own config (a record copied under
    another job's name is not sound); with ``job`` (the plan's job of that key), its plan
    coordinates (k, combination, primary, repeat, grid, teachers) must be the job's."""

    try:
        rec = read_json(path)
    except (OSError, ValueError) as e:
        return None, f"unreadable ({e})"
    problem = schema_problem(rec)
    if problem is None and rec["key"] != Path(path).stem:
        problem = f"its key {rec['key']!r} differs from the file name"
    if problem is None and stable_hash(rec["config"]) != rec["key"]:
        problem = "its config is not the one of its key (another job's record, or an altered one)"
    if problem is None and job is not None:
        want = {
            "k": job.k,
            "combination": list(job.combination),
            "primary": job.primary,
            "repeat": job.repeat,
            "grid": dict(job.grid),
            "teacher_keys": list(job.teacher_keys),
        }
        wrong = [name for name, value in want.items() if rec.get(name) != value]
        if wrong:
            problem = f"field '{wrong[0]}' is {rec.get(wrong[0])!r}, the plan says {want[wrong[0]]!r}"
    return (rec, None) if problem is None else (None, f"not a sound record: {problem}")


def record_files(results_dir: Path) -> list[Path]:
    """Every entry named ``*.json`` under ``records/`` (whatever its kind: a folder or a FIFO named
    so is a damaged record too), sorted."""
    folder = records_dir(results_dir)
    try:
        return sorted(p for p in folder.iterdir() if p.name.endswith(".json") and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def quarantine_file(results_dir: Path, path: Path) -> Path:
    """Move a damaged record aside to ``results/<sweep>/quarantine/``; returns where it went."""
    dest = Path(results_dir) / "quarantine" / f"{path.name}.{int(time.time())}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def scan_records(results_dir: Path, jobs: Iterable[Any] = ()) -> tuple[dict[str, dict], list[tuple[Path, str]]]:
    """The sound records of a sweep by key (``record_problem``; ``jobs``: the plan's jobs, whose
    records must match their coordinates) and every damaged file with what is wrong with it."""
    by_key = {j.key: j for j in jobs}
    out: dict[str, dict] = {}
    damaged: list[tuple[Path, str]] = []
    for p in record_files(results_dir):
        rec, problem = record_problem(p, by_key.get(p.name[: -len(".json")]))
        if rec is not None:
            out[rec["key"]] = rec
        else:
            assert problem is not None  # record_problem names the problem whenever it gives no record
            damaged.append((p, problem))
    return out, damaged


def load_records(results_dir: Path, quarantine: bool = False, jobs: Iterable[Any] = ()) -> dict[str, dict]:
    """``scan_records``, with a warning naming each damaged file (truncated, corrupt, not a
    record, not a regular file, too large); with ``quarantine`` (the driver, holding the sweep's
    lock) it is also moved to ``results/<sweep>/quarantine/`` so that its job runs again."""
    out, damaged = scan_records(results_dir, jobs)
    for p, problem in damaged:
        if quarantine:
            dest = quarantine_file(results_dir, p)
            log.warning("%s: %s; moved to %s, the job runs again", p, problem, dest)
        else:
            log.warning("%s: %s; skipped", p, problem)
    return out


def encode_array(values: Any) -> dict:
    """A small integer array as JSON: zlib-compressed little-endian bytes, base64 (a CoLA dev set
    of 1,043 predictions takes well under 1 kB)."""
    import base64
    import zlib

    import numpy as np

    a = np.asarray(values)
    dtype = "<i1" if a.size == 0 or (a.min() >= -128 and a.max() < 128) else "<i4"
    return {
        "dtype": dtype,
        "n": int(a.size),
        "zlib_base64": base64.b64encode(zlib.compress(a.astype(dtype).tobytes(), 9)).decode(),
    }


def decode_array(encoded: dict) -> Any:
    """The numpy array of ``encode_array``; its decompressed size is bounded by the ``n`` it
    claims (a record cannot make a reader inflate gigabytes)."""
    import base64
    import binascii
    import zlib

    import numpy as np

    if encoded["dtype"] not in ("<i1", "<i4") or not _is_int(encoded["n"]) or not 0 <= encoded["n"] <= MAX_JSON_BYTES:
        raise ValueError(f"expected dtype <i1 or <i4 and 0 <= n <= {MAX_JSON_BYTES}")
    dtype = np.dtype(encoded["dtype"])
    want = encoded["n"] * dtype.itemsize
    try:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.b64decode(encoded["zlib_base64"], validate=True), want + 1)
    except (zlib.error, binascii.Error) as e:
        raise ValueError(f"cannot decode ({e})") from None
    if len(raw) != want or inflate.unconsumed_tail:
        got = "more" if len(raw) > want else len(raw) // dtype.itemsize
        raise ValueError(f"expected {encoded['n']} values, decoded {got}")
    return np.frombuffer(raw, dtype=dtype)
