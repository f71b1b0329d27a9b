"""A sweep's results as one file, and a report rebuilt from such a file on any machine.

``bench archive SPEC`` writes ``archive/<sweep>.jsonl.gz`` (or ``--out FILE``): gzip-compressed
JSON lines, the same bytes for the same records (sorted, no timestamp in the gzip header):

1. a header: ``{"bench_archive": ARCHIVE_FORMAT, "sweep": name, "spec": the spec document of SPEC
   (``extends`` merged, without its [paths]: they are the machine's), "bench": the version that
   wrote the file, "teachers": n, "records": n, "left_out": {"damaged records": n, "unreadable
   teachers": n}}``;
2. one ``{"teacher": meta.json}`` per stored teacher of the plan, by key (weights, logit caches
   and transformers folders are left out: a report reads the metadata only);
3. one ``{"record": record}`` per sound record of the plan's jobs, by key, predictions included;
4. with an adaptive design, one ``{"design": design.json}``.

``bench report FILE.jsonl.gz [--out DIR]`` unpacks it into a temporary project of its own (the
spec with [paths] pointing there, records, teacher metadata and design state at their places),
writes the report to ``DIR/<sweep>/`` (default ``reports/<sweep>/`` under the current folder) and
removes the temporary project. Records are checked as ``bench report`` checks a results folder:
a record whose config is not the one of its key, or whose coordinates are not its job's, is
left out and counted as missing (a changed score with an unchanged config cannot be told). The
data, tokenizer and weights a spec names are not needed (their values stay in the keys).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import __version__
from bench.core.errors import UserError
from bench.core.files import MAX_JSON_BYTES, atomic_write_bytes, atomic_write_json, loads_bounded, read_json
from bench.core.records import DESIGN_FILE, records_dir, scan_records
from bench.plan.jobs import Plan, make_plan
from bench.spec.compose import read_document
from bench.spec.load import parse_sweep
from bench.training.teachers import load_meta, teacher_dir, teacher_done

log = logging.getLogger(__name__)

ARCHIVE_FORMAT = 1
SUFFIX = ".jsonl.gz"
MAX_ARCHIVE_TEXT = 1 << 30  # an archive inflating to more than this is not one of ours
KEY = re.compile(r"[0-9a-f]{8,64}")  # job and teacher keys (core.hashing)


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an archive file (by its suffix): what ``bench report`` checks first."""
    return str(path).endswith(SUFFIX) and Path(path).is_file()


def default_path(plan: Plan) -> Path:
    """Where ``bench archive`` writes by default: ``archive/<sweep>.jsonl.gz`` under the project root."""
    return Path(plan.sweep.root or ".") / "archive" / f"{plan.sweep.name}{SUFFIX}"


def spec_document(spec_file: str) -> dict:
    """The spec document of ``spec_file`` as an archive stores it: ``extends`` merged, no [paths]."""
    doc = read_document(spec_file)
    doc.pop("paths", None)
    return doc


def _project(doc: dict, root: str, reports: str, where: str) -> Plan:
    """The plan of a stored spec document laid out in the project folder ``root``."""
    doc = dict(doc)
    doc["paths"] = {
        "root": root,
        "teachers": os.path.join(root, "teachers"),
        "results": os.path.join(root, "results"),
        "reports": reports,
        "cache": os.path.join(root, "cache"),
    }
    return make_plan(parse_sweep(doc, where, inputs=False))


def write_archive(plan: Plan, spec_file: str, out: Path) -> tuple[int, int]:
    """Write the archive of ``plan``'s stored teachers and sound records to ``out`` (module
    docstring); returns (teachers, records) written. ``spec_file``: the spec ``plan`` was made
    from; the plan rebuilt from the stored document must have the same jobs (it is what a reader
    of the archive gets), or nothing is written."""
    sweep = plan.sweep
    doc = spec_document(spec_file)
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        again = _project(doc, tmp, tmp, spec_file)
    if [j.key for j in again.jobs] != [j.key for j in plan.jobs]:
        raise UserError(f"{spec_file}: the spec without its [paths] plans other jobs; expected the same plan")
    teachers, unreadable = [], 0
    for t in sorted(plan.teachers, key=lambda t: t.key):
        if not teacher_done(sweep.paths.teachers, sweep.task.name, t.key):
            continue
        try:
            teachers.append(load_meta(sweep.paths.teachers, sweep.task.name, t.key))
        except (OSError, ValueError) as e:
            log.warning("teacher %s: meta.json unreadable (%s); left out of the archive", t.key, e)
            unreadable += 1
    records, damaged = scan_records(sweep.results_dir(), plan.jobs)
    planned = {j.key for j in plan.jobs}
    kept = [records[k] for k in sorted(records) if k in planned]
    design_path = sweep.results_dir() / DESIGN_FILE
    design = read_json(design_path) if design_path.is_file() else None
    header = {
        "bench_archive": ARCHIVE_FORMAT,
        "sweep": sweep.name,
        "spec": doc,
        "bench": __version__,
        "teachers": len(teachers),
        "records": len(kept),
        "left_out": {"damaged records": len(damaged), "unreadable teachers": unreadable},
    }
    lines = [
        header,
        *({"teacher": t} for t in teachers),
        *({"record": r} for r in kept),
        *([{"design": design}] if design is not None else []),
    ]
    text = "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return len(teachers), len(kept)


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each line of an archive, refusing (one line, exit 2) a file
    that is not gzip'd JSON lines, a line longer than a JSON file of bench may be, JSON nested
    too deep, or a file inflating past ``MAX_ARCHIVE_TEXT``."""
    where, total, number = str(path), 0, 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            while line := f.readline(MAX_JSON_BYTES + 1):
                number += 1
                total += len(line)
                if len(line) > MAX_JSON_BYTES or total > MAX_ARCHIVE_TEXT:
                    raise UserError(f"{where}: line {number}: expected a bench archive, got a line or file too large")
                yield number, loads_bounded(line)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        raise UserError(
            f"{where}: line {number}: expected a bench archive (gzip-compressed JSON lines), could not read it ({e})"
        ) from None


def _key(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not KEY.fullmatch(value):
        raise UserError(f"{where}: field '{field}': expected a key of hex digits, got {str(value)[:40]!r}")
    return value


@contextlib.contextmanager
def unpacked(path: str | os.PathLike, reports: Path) -> Iterator[Plan]:
    """The plan of an archive's sweep, its teachers' metadata, records and design state laid out in
    a temporary project (removed afterwards) whose reports go to ``reports``/<sweep>/; lines are
    written out as they are read, so an archive never sits in memory whole."""
    where = str(path)
    lines = _lines(path)
    first = next(lines, None)
    header = first[1] if first else None
    if not isinstance(header, dict) or header.get("bench_archive") != ARCHIVE_FORMAT:
        raise UserError(f"{where}: line 1: expected a bench archive header of format {ARCHIVE_FORMAT}")
    if not isinstance(header.get("spec"), dict):
        raise UserError(f"{where}: field 'spec': expected the sweep's spec document in the header")
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        plan = _project(header["spec"], tmp, str(reports.resolve()), where)
        sweep = plan.sweep
        folder = records_dir(sweep.results_dir())
        folder.mkdir(parents=True, exist_ok=True)
        for number, line in lines:
            kind = next(iter(line), None) if isinstance(line, dict) and len(line) == 1 else None
            body = line[kind] if kind is not None else None
            if not isinstance(body, dict):
                raise UserError(f"{where}: line {number}: expected one teacher, record or design object")
            if kind == "teacher":
                key = _key(body.get("key"), where, f"line {number}: teacher.key")
                atomic_write_json(teacher_dir(sweep.paths.teachers, sweep.task.name, key) / "meta.json", body)
            elif kind == "record":
                atomic_write_json(folder / f"{_key(body.get('key'), where, f'line {number}: record.key')}.json", body)
            elif kind == "design":
                atomic_write_json(sweep.results_dir() / DESIGN_FILE, body)
            else:
                raise UserError(f"{where}: line {number}: expected a teacher, record or design, got {kind!r}")
        left = {k: v for k, v in (header.get("left_out") or {}).items() if isinstance(v, int) and v > 0}
        if left:
            log.warning("%s: written with %s left out", where, ", ".join(f"{v} {k}" for k, v in left.items()))
        yield plan
