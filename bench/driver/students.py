"""Saved students (``run.save_students``): where each goes, and keeping only the best per k.

``all``: every distillation job saves its student to ``results/<sweep>/students/<job key>/`` and
its record says so (``student``: path and format). ``best``: jobs save the same way, and at the
end of ``bench run`` only the saved student with the best headline score per k is kept (ties: the
smaller job key); the others are deleted and their records rewritten with ``student: null``.
Saving all and pruning afterwards is the simple honest way: which student is best is known only
once the sweep's jobs have run, and jobs run in parallel worker processes. ``none``: nothing is
saved, and students saved before are left alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.core.records import load_records, record_path, write_record
from bench.plan.jobs import Plan
from bench.tasks.table import LOWER_IS_BETTER


def student_dir(results_dir: Path, key: str) -> Path:
    """Where a distillation job saves its student."""
    return Path(results_dir) / "students" / key


def student_path(plan: Plan, key: str) -> str | None:
    """The absolute folder a job's payload names for its student, or None with ``save_students = "none"``."""
    if plan.sweep.run.save_students == "none":
        return None
    return str(student_dir(plan.sweep.results_dir(), key).resolve())


def best_students(records: dict[str, dict]) -> dict[int, str]:
    """Per k, the job key of the ok record with a saved student and the best headline score
    (the smallest for metrics where lower is better; ties: the smaller key)."""
    best: dict[int, tuple] = {}
    for key, r in sorted(records.items()):
        if r.get("status") != "ok" or not r.get("student"):
            continue
        sign = 1 if r["metric"] in LOWER_IS_BETTER else -1
        rank = (sign * r["score"], key)
        if r["k"] not in best or rank < best[r["k"]]:
            best[r["k"]] = rank
    return {k: rank[1] for k, rank in best.items()}


def keep_best_students(plan: Plan) -> list[str]:
    """Delete every saved student of the sweep but the best per k (``best_students``), rewriting
    the records of those deleted with ``student: null``; returns their job keys. Called by the
    driver, which holds the sweep's lock, after the sweep's jobs ran."""
    results = plan.sweep.results_dir()
    records = load_records(results, jobs=plan.jobs)
    keep = set(best_students(records).values())
    removed = []
    for key, r in sorted(records.items()):
        if not r.get("student") or key in keep:
            continue
        shutil.rmtree(student_dir(results, key), ignore_errors=True)  # never a path read from a record
        write_record(record_path(results, key), {**r, "student": None})
        removed.append(key)
    return removed
