"""``bench rerun``: run one distillation job again from its record alone, to check that a result
is reproducible (on CPU, bit for bit) or to redo it with ``--replace``. A job trained in a stack
(``run.stack``, its record's ``stack``) is rerun alone: its scores are then compared within
``STACK_TOLERANCE``, since only the order of floating-point operations differs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.core.contracts import JobPaths, JobPayload
from bench.core.errors import UserError
from bench.core.files import read_json
from bench.driver.students import student_dir
from bench.engines.queue import Slot, Worker, WorkerError
from bench.training.teachers import teacher_done

STACK_TOLERANCE = 0.01  # largest score difference a stacked record's rerun alone may show (docs/performance.md)


def compare_scores(old: dict, new: dict) -> tuple[bool, str]:
    """Whether a rerun reproduces a record, and how: every score bit for bit, or, for a record
    trained in a stack, every score within STACK_TOLERANCE."""
    if old.get("scores") == new["scores"]:
        return True, "identical, bit for bit"
    if not old.get("stack") or not isinstance(old.get("scores"), dict):
        return False, "DIFFERS from the record"
    gaps = [
        abs(float(v) - float(new["scores"].get(split, {}).get(metric, float("inf"))))
        for split, metrics in old["scores"].items()
        for metric, v in metrics.items()
    ]
    worst = max(gaps, default=0.0)
    if worst <= STACK_TOLERANCE:
        return True, f"within {STACK_TOLERANCE:g} (largest difference {worst:.4g}; trained in a stack, rerun alone)"
    return False, f"DIFFERS from the record by up to {worst:.4g} (more than {STACK_TOLERANCE:g} for a stacked record)"


def find_record(name: str, results_root: str = "results") -> Path:
    """A record file from its path, or from a job key (or a unique prefix of one) under
    ``results_root``/*/records/."""
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return path
    matches = sorted(Path(results_root).glob(f"*/records/{name}*.json"))
    if len(matches) != 1:
        found = "no record" if not matches else f"{len(matches)} records"
        raise UserError(
            f"{name}: {found} found under {results_root}/*/records/; expected a record file or "
            f"one job key (or a unique prefix)"
        )
    return matches[0]


def rerun_job(record_file: Path, device: str = "cpu", replace: bool = False) -> tuple[dict, dict]:
    """Run the job of ``record_file`` again in a worker process, from the record alone; returns
    (the old record, the new one). The new record replaces the old one only with ``replace``; a job
    whose record names a saved student saves it again (replacing the sweep's copy only with ``replace``)."""
    try:
        old = read_json(record_file)
    except (OSError, ValueError) as e:
        raise UserError(f"{record_file}: cannot read the record ({e})") from None
    if not isinstance(old, dict) or "config" not in old or "teacher_keys" not in old:
        raise UserError(f"{record_file}: expected a distillation record (with config and teacher_keys)")
    paths = old.get("paths") or {"teachers": os.path.abspath("teachers"), "cache": os.path.abspath(".cache/bench")}
    task = old["config"]["task"]["name"]
    for key in old["teacher_keys"]:
        if not teacher_done(paths["teachers"], task, key):
            raise UserError(
                f"{record_file}: teacher {key} is not stored under {paths['teachers']}/{task}; "
                f"expected the teachers the job used (bench run its sweep to train them)"
            )
    scratch = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    out = record_file if replace else scratch / record_file.name
    # a job that saved its student saves it again: with --replace where the sweep keeps it, else in the scratch
    saved = old.get("student") is not None
    student = student_dir(record_file.resolve().parent.parent, old["key"]) if replace else scratch / "student"
    threads = int(old.get("threads") or 1)
    payload = JobPayload(
        kind="distill",
        key=old["key"],
        config=old["config"],
        paths=JobPaths(teachers=paths["teachers"], cache=paths["cache"], root=paths.get("root", "")),
        threads=threads,
        deterministic=bool(old.get("deterministic")),
        plan={"sweep": old["sweep"], **{k: old[k] for k in ("k", "combination", "primary", "repeat", "grid")}},
        record_path=str(Path(out).resolve()),
        student_path=str(student.resolve()) if saved else None,
    ).dispatched(1, f"{device}#rerun", device, 0.0)
    worker = Worker(Slot(f"{device}#rerun", device, threads), scratch / "worker.log")
    try:
        worker.start()
        reply = worker.run(payload, None)
    except WorkerError as e:
        raise UserError(f"{record_file}: the rerun's worker failed: {e}") from None
    finally:
        worker.stop()
    if reply["status"] != "ok":
        raise UserError(f"{record_file}: the rerun failed: {reply['error']} (log: {scratch / 'worker.log'})")
    return old, read_json(out)
