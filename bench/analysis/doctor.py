"""``bench doctor``: the state of a sweep on disk, its failures grouped by error, and what the
next ``bench run`` would do. It only reads: nothing is moved or written."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from bench.core.records import record_files, record_problem
from bench.driver.run import FINAL_STATUSES, lock_holder
from bench.plan.jobs import Plan
from bench.training.teachers import check_teacher, teacher_done


def _error_group(error: str | None) -> str:
    """An error message with its numbers, keys and paths blanked, so alike failures group."""
    text = (error or "unknown error").splitlines()[0]
    text = re.sub(r"/[^\s:'\"]+", "<path>", text)
    text = re.sub(r"\b[0-9a-f]{12,}\b", "<key>", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)


def diagnose(plan: Plan) -> dict:
    """Counts of jobs by state (ok, diverged, failed, skipped, missing, damaged record, stale
    record of another config), teachers (stored, missing, damaged), failures grouped by error,
    the lock's holder, and what a rerun would do."""

    sweep = plan.sweep
    planned = {j.key: j for j in plan.jobs}
    records: dict[str, dict] = {}
    damaged: list[dict[str, Any]] = []  # {"file", "problem"}
    stale: list[str] = []
    for p in record_files(sweep.results_dir()):
        rec, problem = record_problem(p, planned.get(p.name[: -len(".json")]))
        if rec is None:
            damaged.append({"file": str(p), "problem": problem})
        elif rec["key"] in planned:
            records[rec["key"]] = rec
        else:
            stale.append(rec["key"])
    status = Counter(r["status"] for r in records.values())
    missing = [k for k in planned if k not in records]
    damaged_keys = {Path(d["file"]).stem for d in damaged}
    groups = Counter(_error_group(r.get("error")) for r in records.values() if r["status"] in ("failed", "skipped"))
    root, task = sweep.paths.teachers, sweep.task.name
    teachers: dict[str, Any] = {"stored": 0, "missing": 0, "damaged": []}
    for t in plan.teachers:
        if not teacher_done(root, task, t.key):
            teachers["missing"] += 1
            continue
        problem = check_teacher(root, task, t.key)
        if problem is None:
            teachers["stored"] += 1
        else:
            teachers["damaged"].append({"key": t.key, "problem": problem})
    to_run = [k for k in planned if records.get(k, {}).get("status") not in FINAL_STATUSES]
    bad_teachers = {d["key"] for d in teachers["damaged"]}
    need = {tk for k in to_run for tk in planned[k].teacher_keys}
    train = [
        t.key for t in plan.teachers if t.key in need and (t.key in bad_teachers or not teacher_done(root, task, t.key))
    ]
    return {
        "sweep": sweep.name,
        "planned": len(planned),
        "jobs": {
            "ok": status.get("ok", 0),
            "diverged": status.get("diverged", 0),
            "failed": status.get("failed", 0),
            "skipped": status.get("skipped", 0),
            "missing": len(missing) - len(damaged_keys & set(missing)),
            "damaged_records": len(damaged),
            "stale_records": len(stale),
        },
        "teachers": {
            "planned": len(plan.teachers),
            "stored": teachers["stored"],
            "missing": teachers["missing"],
            "damaged": teachers["damaged"],
        },
        "failures_by_error": dict(groups.most_common()),
        "damaged_records": damaged,
        "lock": lock_holder(sweep.results_dir()),
        "rerun_would": {
            "quarantine_records": len(damaged),
            "quarantine_teachers": len(bad_teachers),
            "train_teachers": len(train),
            "run_jobs": len(to_run),
        },
    }


def format_diagnosis(d: dict) -> str:
    """The diagnosis as a few lines of text."""
    j, t, r = d["jobs"], d["teachers"], d["rerun_would"]
    lines = [
        f"sweep {d['sweep']}: {d['planned']} planned jobs",
        f"  jobs: {j['ok']} ok, {j['diverged']} diverged, {j['failed']} failed, {j['skipped']} skipped "
        f"(a teacher failed), {j['missing']} missing, {j['damaged_records']} damaged records, "
        f"{j['stale_records']} stale records (of another config; ignored)",
        f"  teachers: {t['stored']} of {t['planned']} stored, {t['missing']} missing, {len(t['damaged'])} damaged",
    ]
    lines += [f"    damaged teacher {x['key']}: {x['problem']}" for x in t["damaged"]]
    lines += [f"    damaged record {x['file']}: {x['problem']}" for x in d["damaged_records"]]
    if d["failures_by_error"]:
        lines.append("  failures by error:")
        lines += [f"    {n} x {e}" for e, n in d["failures_by_error"].items()]
    lines.append(f"  lock: {'held by ' + d['lock'] if d['lock'] else 'free'}")
    lines.append(
        f"  a rerun would: quarantine {r['quarantine_records']} records and {r['quarantine_teachers']} "
        f"teachers, train {r['train_teachers']} teachers, run {r['run_jobs']} jobs"
    )
    return "\n".join(lines)
