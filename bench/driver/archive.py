"""A sweep's results as one file, and a report rebuilt from such a file on any machine.

``bench archive SPEC`` writes ``archive/<sweep>.jsonl.gz`` (or ``--out FILE``): gzip-compressed
JSON lines, the same bytes for the same records (sorted, no timestamp in the gzip header):

1. a header: ``{"bench_archive": ARCHIVE_FORMAT, "sweep": name, "spec": the spec document as the
   sweep was run (results/<sweep>/spec.toml, or the spec file), without its [paths],
   "bench": the version that wrote the file, "teachers": n, "records": n}``;
2. one ``{"teacher": meta.json}`` per stored teacher of the plan, by key (weights, logit caches
   and transformers folders are left out: a report reads the metadata only);
3. one ``{"record": record}`` per sound record of the plan's jobs, by key, predictions included.

``bench report FILE.jsonl.gz [--out DIR]`` unpacks it into a temporary project of its own (the
spec with [paths] pointing there, records and teacher metadata at their places) and writes the
report to ``DIR/<sweep>/`` (default ``reports/<sweep>/`` under the current folder). Records are
checked exactly as ``bench report`` checks a results folder (keys, schema, plan coordinates), so
an archive of another configuration or an altered record is named, not reported. The data, tokenizer
and weights a spec names are not needed to report (their values stay in the keys).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import __version__
from bench.core.errors import UserError
from bench.core.files import atomic_write_bytes, atomic_write_json
from bench.core.records import records_dir, scan_records
from bench.plan.jobs import Plan, make_plan
from bench.spec.compose import read_document
from bench.spec.load import parse_sweep
from bench.training.teachers import load_meta, teacher_dir, teacher_done

ARCHIVE_FORMAT = 1
SUFFIX = ".jsonl.gz"
MAX_ARCHIVE_LINE = 64 << 20  # a line longer than this is not a record of ours
MAX_ARCHIVE_TEXT = 4 << 30  # nor an archive inflating to more than this


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an archive file (by its suffix): what ``bench report`` checks first."""
    return str(path).endswith(SUFFIX) and Path(path).is_file()


def default_path(plan: Plan) -> Path:
    """Where ``bench archive`` writes by default: ``archive/<sweep>.jsonl.gz`` under the project root."""
    return Path(plan.sweep.root or ".") / "archive" / f"{plan.sweep.name}{SUFFIX}"


def _document(plan: Plan, spec_file: str) -> dict:
    """The spec document the sweep ran with, without [paths] (they are the machine's)."""
    doc = read_document(spec_file)
    doc.pop("paths", None)
    return doc


def write_archive(plan: Plan, spec_file: str, out: Path) -> tuple[int, int]:
    """Write the archive of ``plan``'s stored teachers and sound records to ``out`` (module
    docstring); returns (teachers, records) written. ``spec_file``: the spec the sweep was run
    with (its saved copy when there is one)."""
    sweep = plan.sweep
    teachers = [
        load_meta(sweep.paths.teachers, sweep.task.name, t.key)
        for t in sorted(plan.teachers, key=lambda t: t.key)
        if teacher_done(sweep.paths.teachers, sweep.task.name, t.key)
    ]
    records, damaged = scan_records(sweep.results_dir(), plan.jobs)
    planned = {j.key for j in plan.jobs}
    kept = [records[k] for k in sorted(records) if k in planned]
    header = {
        "bench_archive": ARCHIVE_FORMAT,
        "sweep": sweep.name,
        "spec": _document(plan, spec_file),
        "bench": __version__,
        "teachers": len(teachers),
        "records": len(kept),
        "damaged_left_out": len(damaged),
    }
    lines = [header, *({"teacher": t} for t in teachers), *({"record": r} for r in kept)]
    text = "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return len(teachers), len(kept)


def read_archive(path: str | os.PathLike) -> tuple[dict, list[dict], list[dict]]:
    """(header, teachers' metadata, records) of an archive file; a file that is not one of ours
    is refused with one line naming it and what was expected."""
    where = str(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = [json.loads(line) for line in _bounded(f, where)]
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        raise UserError(
            f"{where}: expected a bench archive (gzip-compressed JSON lines), could not read it ({e})"
        ) from None
    if not lines or not isinstance(lines[0], dict) or lines[0].get("bench_archive") != ARCHIVE_FORMAT:
        raise UserError(f"{where}: expected a bench archive of format {ARCHIVE_FORMAT} (its first line a header)")
    header = lines[0]
    if not isinstance(header.get("spec"), dict) or not isinstance(header.get("sweep"), str):
        raise UserError(f"{where}: field 'spec': expected the sweep's spec document in the header")
    teachers = [line["teacher"] for line in lines[1:] if isinstance(line, dict) and "teacher" in line]
    records = [line["record"] for line in lines[1:] if isinstance(line, dict) and "record" in line]
    if len(teachers) + len(records) != len(lines) - 1 or not all(isinstance(x, dict) for x in teachers + records):
        raise UserError(f"{where}: expected one teacher or record object per line after the header")
    return header, teachers, records


def _bounded(f: Any, where: str) -> Iterator[str]:
    """The lines of ``f``, refusing one too long or a file inflating past ``MAX_ARCHIVE_TEXT``."""
    total = 0
    while line := f.readline(MAX_ARCHIVE_LINE + 1):
        total += len(line)
        if len(line) > MAX_ARCHIVE_LINE or total > MAX_ARCHIVE_TEXT:
            raise UserError(f"{where}: expected a bench archive, got a line or a file larger than it can hold")
        yield line


@contextlib.contextmanager
def unpacked(path: str | os.PathLike, reports: Path) -> Iterator[Plan]:
    """The plan of an archive's sweep, its teachers' metadata and records laid out in a temporary
    project (removed afterwards) whose reports go to ``reports``/<sweep>/."""
    header, teachers, records = read_archive(path)
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        doc = dict(header["spec"])
        doc["paths"] = {
            "root": tmp,
            "teachers": os.path.join(tmp, "teachers"),
            "results": os.path.join(tmp, "results"),
            "reports": str(reports.resolve()),
            "cache": os.path.join(tmp, "cache"),
        }
        sweep = parse_sweep(doc, str(path), inputs=False)
        plan = make_plan(sweep)
        for meta in teachers:
            key = meta.get("key")
            if not isinstance(key, str) or not key.isalnum():
                raise UserError(f"{path}: field 'teacher.key': expected a teacher key, got {key!r}")
            atomic_write_json(teacher_dir(sweep.paths.teachers, sweep.task.name, key) / "meta.json", meta)
        folder = records_dir(sweep.results_dir())
        folder.mkdir(parents=True, exist_ok=True)
        for rec in records:
            key = rec.get("key")
            if not isinstance(key, str) or not key.isalnum():
                raise UserError(f"{path}: field 'record.key': expected a job key, got {key!r}")
            atomic_write_json(folder / f"{key}.json", rec)
        yield plan
