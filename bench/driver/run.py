"""Running a sweep: what is missing, in what order, on which slots, and what was recorded.

Teachers first (each stored once under teachers/, shared by every sweep with the same teacher
config); each distillation job becomes ready as soon as its k teachers exist. A job with an
"ok" record is never run again; a failed or missing one is.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.cache import load_arrays
from bench.core.config import STACK_AUTO_CAP, job_precision
from bench.core.contracts import JobPaths, JobPayload
from bench.core.energy import settings as energy_settings
from bench.core.errors import SpecError, UserError
from bench.core.files import atomic_write_bytes, read_json, remove_stale_temps
from bench.core.hashing import stable_hash
from bench.core.numerics import NUMERICS_VERSION, UNKNOWN
from bench.core.provenance import provenance
from bench.core.records import load_records, record_path, write_record
from bench.driver.progress import ProgressBar
from bench.driver.students import keep_best_students, student_path
from bench.engines.dispatch import Hooks, early_workers, job_threads, run_engine
from bench.engines.queue import Item
from bench.methods.table import METHODS
from bench.plan.jobs import AugmentJob, DistillJob, OutputsJob, Plan, TeacherJob
from bench.tasks.table import TASKS
from bench.training.teachers import augmented_outputs_path, check_teacher, load_meta, quarantine_teacher, teacher_done

log = logging.getLogger(__name__)

FINAL_STATUSES = ("ok", "diverged")  # a job with such a record is not run again


@dataclass(frozen=True)
class RunSummary:
    """What one ``bench run`` did."""

    teachers_trained: int
    jobs_run: int
    jobs_ok: int
    jobs_failed: int
    jobs_diverged: int
    jobs_skipped: int
    already_done: int
    wall_seconds: float


def _payload(
    plan: Plan,
    kind: str,
    key: str,
    config: dict,
    coordinates: dict,
    record: str | None = None,
    student: str | None = None,
) -> JobPayload:
    """A job's payload: the output roots and run options every kind carries (determinism and the
    thread count, ``engines.dispatch.job_threads``), with its own config and coordinates in the
    plan; a distillation job's record path and where it saves its student (or None)."""
    p = plan.sweep.paths
    return JobPayload(
        kind=kind,
        key=key,
        config=config,
        paths=JobPaths(
            teachers=os.path.abspath(p.teachers), cache=os.path.abspath(p.cache), root=p.root or os.getcwd()
        ),
        threads=job_threads(plan.sweep.run),
        deterministic=plan.sweep.run.deterministic,
        plan={"sweep": plan.sweep.name, **coordinates},
        record_path=record,
        student_path=student,
        energy=energy_settings(plan.sweep.run.energy, plan.sweep.run.slots_per_device()),
    )


def teacher_payload(plan: Plan, t: TeacherJob) -> JobPayload:
    """What a worker needs to fine-tune teacher ``t`` (the engine adds slot, attempt, queue wait)."""
    return _payload(plan, "teacher", t.key, t.config, {"index": t.index})


def prep_payload(plan: Plan, job: AugmentJob | OutputsJob) -> JobPayload:
    """What a worker needs for an augmentation run or a teacher's outputs on one."""
    return _payload(plan, "augment" if isinstance(job, AugmentJob) else "teacher-outputs", job.key, job.config, {})


def prep_done(plan: Plan, job: AugmentJob | OutputsJob) -> bool:
    """Whether an augmentation run or a teacher's outputs on it are stored and sound (their digest
    matches, bench/core/cache.py: a damaged one is made again)."""
    from bench.training.augment import augmented_path  # lazy: torch only in workers, not in the driver

    p = plan.sweep.paths
    task = plan.sweep.task.name
    if isinstance(job, AugmentJob):
        path = augmented_path(os.path.abspath(p.cache), task, job.key)
    else:
        path = augmented_outputs_path(p.teachers, task, job.teacher_key, job.augment_key)
    return load_arrays(path) is not None


def distill_payload(plan: Plan, j: DistillJob) -> JobPayload:
    """What a worker needs to run distillation job ``j`` and write its record."""
    coordinates = {
        "k": j.k,
        "combination": list(j.combination),
        "primary": j.primary,
        "repeat": j.repeat,
        "grid": j.grid,
    }
    record = str(record_path(plan.sweep.results_dir(), j.key).resolve())
    return _payload(plan, "distill", j.key, j.config, coordinates, record, student_path(plan, j.key))


STACK_VARIES = ("seed", "teachers", "primary")  # what may differ between the jobs of one stack


def stack_group(config: dict) -> str:
    """What jobs trained in one stack share: everything in their config but seed, teachers and
    primary (task, student model and training, method and parameters, augmentation, precision)."""
    return stable_hash({k: v for k, v in config.items() if k not in STACK_VARIES})


def _even_chunks(items: list, count: int) -> list[list]:
    """``items`` in ``count`` contiguous chunks whose sizes differ by at most one (plan order kept)."""
    size, extra = divmod(len(items), count)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def stack_items(plan: Plan, items: list[Item]) -> list[Item]:
    """The distillation items as the queue runs them with ``run.stack`` (``_stacked``). Jobs of a
    method that cannot be stacked, or at a precision other than fp32, stay single."""
    run = plan.sweep.run
    if run.stack == 1 or len(items) < 2:
        return items
    if METHODS[plan.sweep.method.name].stack_setup is None or run.precision != "fp32":
        log.info(
            f"note: run.stack: method {plan.sweep.method.name!r} at {run.precision} is not stacked; jobs run alone"
        )
        return items
    return _stacked(plan, items)


def teacher_stack_items(plan: Plan, items: list[Item]) -> list[Item]:
    """The teacher items as the queue runs them with ``run.stack``: the sweep's teachers (one
    architecture, seeds differ) stacked as students are (``_stacked``), when the task's inputs are
    dense (text is padded per batch) and at fp32; a stack of teachers whose model cannot be
    stacked (dropout) is trained one by one by its worker (``training.stack.stack_problem``)."""
    run = plan.sweep.run
    if run.stack == 1 or len(items) < 2 or run.precision != "fp32" or TASKS[plan.sweep.task.name].modality != "image":
        return items
    return _stacked(plan, items)


def _stacked(plan: Plan, items: list[Item]) -> list[Item]:
    """``items`` in stacks (n or "auto", up to ``STACK_AUTO_CAP`` per stack; the worker may then
    train fewer at once): stack-compatible jobs (``stack_group``) in stacks of at most n, in plan
    order, as many stacks as the slots can run at once when there are fewer, their count rounded
    up to a multiple of the slots (so the slots end together); a stack waits for the union of its
    jobs' dependencies."""
    run = plan.sweep.run
    limit = STACK_AUTO_CAP if run.stack == "auto" else int(run.stack)
    slots = max(1, run.slots())
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(stack_group(item.payload.config), []).append(item)
    out = []
    for group in groups.values():
        count = max(-(-len(group) // limit), min(len(group), slots))
        for chunk in _even_chunks(group, -(-count // slots) * slots if count > slots else count):
            out.append(chunk[0] if len(chunk) == 1 else _stack_item(plan, chunk))
    return out


def _stack_item(plan: Plan, members: list[Item]) -> Item:
    """One queue item for jobs trained together (a ``stack`` payload holding theirs)."""
    keys = [m.key for m in members]
    key = "stack-" + stable_hash(keys)[:16]
    payload = _payload(plan, "stack", key, {"members": keys}, {"stack": plan.sweep.run.stack})
    payload = dataclasses.replace(payload, members=tuple(m.payload for m in members))
    deps = tuple(dict.fromkeys(d for m in members for d in m.deps))
    return Item(key=key, kind="stack", deps=deps, payload=payload, members=tuple(members))


def pending_work(plan: Plan, repair: bool = False) -> tuple[list, list, dict]:
    """Teachers that pending jobs need and that are not stored, distillation jobs without a final
    record, and the final records of the plan (``ok``, or ``diverged``: a deterministic outcome
    that a rerun would repeat)."""
    task = plan.sweep.task.name
    records = load_records(plan.sweep.results_dir(), quarantine=repair, jobs=plan.jobs)
    planned = {j.key for j in plan.jobs}
    ok = {k: r for k, r in records.items() if r.get("status") in FINAL_STATUSES and k in planned}
    jobs = [j for j in plan.jobs if j.key not in ok]
    needed = {k for j in jobs for k in j.teacher_keys}
    teachers = [
        t for t in plan.teachers if t.key in needed and not teacher_done(plan.sweep.paths.teachers, task, t.key)
    ]
    return teachers, jobs, ok


def _record_ok(path: str) -> bool:
    try:
        return read_json(path).get("status") in FINAL_STATUSES
    except (OSError, ValueError):
        return False


class SweepLock:
    """``results/<sweep>/.lock``, held (flock) by the one driver of a sweep; it names its holder.
    The kernel releases it when the holder dies, so a killed run leaves no lock behind: the next
    run takes it over and says so."""

    def __init__(self, results: Path):
        import fcntl
        import json
        import socket

        results.mkdir(parents=True, exist_ok=True)
        self.path = results / ".lock"
        self.file = open(self.path, "a+")
        self.file.seek(0)
        previous = self.file.read().strip()
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise UserError(
                f"{results}: another `bench run` of this sweep is running: {_holder(previous)} "
                f"(lock {self.path}); wait for it or stop it"
            ) from None
        if previous:
            log.info("note: took over the lock of a run that ended without releasing it: %s", _holder(previous))
        self.file.seek(0)
        self.file.truncate()
        self.file.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.time(),
                    "command": " ".join(sys.argv),
                }
            )
            + "\n"
        )
        self.file.flush()

    def close(self) -> None:
        """Release the lock, leaving the file empty (a non-empty lock file means an unclean end)."""
        self.file.seek(0)
        self.file.truncate()
        self.file.flush()
        self.file.close()


def _holder(text: str) -> str:
    import json

    try:
        h = json.loads(text)
        return (
            f"pid {h['pid']} on {h['host']}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(h['started']))}"
            f" ({h['command']})"
        )
    except (ValueError, KeyError, TypeError):
        return f"holder {text or 'unknown'}"


def lock_holder(results: Path) -> str | None:
    """Who holds the sweep's lock now, or None (for ``bench doctor``)."""
    import fcntl

    path = results / ".lock"
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            return _holder(f.read().strip())
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def sweep_lock(results: Path) -> SweepLock:
    """Hold ``results/<sweep>/.lock`` for this run: two drivers on one sweep would race."""
    return SweepLock(results)


def preflight(plan: Plan) -> None:
    """Check, before anything is written, that the output roots can be written and that the
    task's local data reads as the loaders will read it; raises UserError naming the field."""
    import tempfile

    sweep = plan.sweep
    for field in ("teachers", "results", "reports", "cache"):
        root = Path(getattr(sweep.paths, field)).absolute()
        probe = root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        problem = None
        if not probe.is_dir():
            problem = f"{probe} is not a folder"
        else:
            try:
                with tempfile.TemporaryFile(dir=probe):
                    pass
            except OSError as e:
                problem = f"cannot write in {probe} ({e.strerror})"
        if problem:
            raise SpecError(sweep.source, f"paths.{field}", f"expected a writable folder for {root}; {problem}")
    check = TASKS[sweep.task.name].check
    if check is not None:
        check(sweep.task)


def remove_stale_temporaries(plan: Plan) -> None:
    """Delete what killed processes left half-written (``records.remove_stale_temps``): temp files
    and teacher temp folders whose process is gone, under the sweep's results and reports, its
    task's teachers and the cache. Finished files, and temps of live processes, are never touched."""
    sweep = plan.sweep
    for folder in (
        sweep.results_dir(),
        sweep.reports_dir(),
        Path(sweep.paths.teachers) / sweep.task.name,
        Path(sweep.paths.cache),
    ):
        remove_stale_temps(folder)


def quarantine_damaged_teachers(plan: Plan, keys: set[str]) -> list[str]:
    """Check the stored teachers among ``keys`` against their meta.json (sizes and sha256 sums);
    move damaged ones aside (they are then trained again). Returns their keys."""

    root, task = plan.sweep.paths.teachers, plan.sweep.task.name
    damaged = []
    for t in plan.teachers:
        if t.key not in keys or not teacher_done(root, task, t.key):
            continue
        problem = check_teacher(root, task, t.key)
        if problem is not None:
            dest = quarantine_teacher(root, task, t.key, problem)
            log.warning("teacher %s: %s; moved to %s, it is trained again", t.key, problem, dest)
            damaged.append(t.key)
    return damaged


def made_with(plan: Plan, finished: dict, field: str, absent: Any = None) -> tuple[Counter, Counter]:
    """How ``finished`` records and the plan's stored teachers (their meta.json) were made, by the
    value of ``field`` in each: (records per value, teachers per value). One without the field counts
    as ``absent``, or not at all when that is None; a teacher whose meta.json cannot be read is not
    counted (it is quarantined and trained again)."""
    sweep = plan.sweep
    made = Counter(r.get(field, absent) for r in finished.values())
    stored: Counter = Counter()
    for t in plan.teachers:
        if teacher_done(sweep.paths.teachers, sweep.task.name, t.key):
            try:
                stored[load_meta(sweep.paths.teachers, sweep.task.name, t.key).get(field, absent)] += 1
            except (OSError, ValueError):
                continue
    del made[None], stored[None]  # not counted (a Counter ignores a missing key)
    return made, stored


def made_otherwise(plan: Plan, finished: dict, field: str, this: Any, absent: Any = None) -> list[tuple[Any, int, int]]:
    """(value, records, teachers) for each value of ``field`` other than ``this`` that ``finished``
    records or the plan's stored teachers were made with (``made_with``), numbers first."""
    made, stored = made_with(plan, finished, field, absent)
    other = sorted((set(made) | set(stored)) - {this}, key=lambda v: (isinstance(v, str), str(v).zfill(20)))
    return [(v, made[v], stored[v]) for v in other]


def check_threads(plan: Plan, finished: dict) -> None:
    """Refuse, before any job runs, to resume a sweep whose ``finished`` records or stored teachers
    were made with another torch thread count than this run's (``engines.dispatch.job_threads``): scores
    depend on it (a digits teacher scored 0.9610 with 2 threads, 0.9638 with more) and job keys do
    not hold it, so the two would mix silently. Records and teachers without ``threads`` (written
    before it was) are not counted. ``bench run --mixed-threads`` resumes anyway."""
    threads = job_threads(plan.sweep.run)
    other = made_otherwise(plan, finished, "threads", threads)
    if not other:
        return
    found = ", ".join(f"{n} thread(s): {records} records, {teachers} teachers" for n, records, teachers in other)
    raise SpecError(
        plan.sweep.source,
        "run.threads_per_job",
        f"expected the torch thread count this sweep's results were made with ({found}), got "
        f"{threads}; scores depend on it, so set run.threads_per_job = {other[0][0]}, or pass "
        f"--mixed-threads to resume with {threads} anyway",
    )


def check_numerics(plan: Plan, finished: dict) -> None:
    """``check_threads`` for the numerics version (``core.numerics``): refuse, before any job runs,
    to resume a sweep whose ``finished`` records or stored teachers hold another ``numerics`` than
    this bench's ``NUMERICS_VERSION``, or none (``UNKNOWN``: made before the field existed, by code
    whose numbers may differ from this one's). Scores depend on it and keys do not hold it. A report
    reads them all; ``bench run --mixed-numerics`` resumes anyway."""
    other = made_otherwise(plan, finished, "numerics", NUMERICS_VERSION, absent=UNKNOWN)
    if not other:
        return
    found = "; ".join(f"numerics {v}: {records} records, {teachers} teachers" for v, records, teachers in other)
    if any(v == UNKNOWN for v, _, _ in other):
        found += " (unknown: made before records and teachers held it)"
    raise SpecError(
        plan.sweep.source,
        "numerics",
        f"expected the numerics version of this bench ({NUMERICS_VERSION}) in the results this run "
        f"resumes, got {found}; scores depend on it, so resume with the bench that made them, or pass "
        f"--mixed-numerics to resume with numerics {NUMERICS_VERSION} anyway",
    )


SAVED_SPEC = "spec.toml"  # results/<sweep>/spec.toml: the spec the sweep was last run with


def run_sweep(
    plan: Plan,
    quiet: bool = False,
    teachers_only: bool = False,
    mixed_threads: bool = False,
    spec_text: str = "",
    mixed_numerics: bool = False,
) -> RunSummary:
    """Run every missing job of the plan on the sweep's device slots (or only its teachers); refuses
    to resume results made with another thread count unless ``mixed_threads`` (``check_threads``),
    or with another numerics version unless ``mixed_numerics`` (``check_numerics``).
    ``spec_text`` (the spec as this run uses it) is kept as results/<sweep>/spec.toml."""
    sweep = plan.sweep
    results = sweep.results_dir()
    preflight(plan)
    lock = sweep_lock(results)
    spawned = early_workers(sweep.run, results / "logs")  # their start-up overlaps the planning below
    try:
        if spec_text:
            atomic_write_bytes(results / SAVED_SPEC, spec_text.encode())
        summary = _run_locked(plan, quiet, teachers_only, mixed_threads, mixed_numerics, spawned)
        if sweep.run.save_students == "best" and not teachers_only:  # also what an interrupted earlier run left
            pruned = keep_best_students(plan)
            if pruned and not quiet:
                log.info("%s: kept the best student per k, deleted %d other(s)", sweep.name, len(pruned))
        return summary
    finally:
        for worker in spawned.values():  # ended by the queue; these close only what it never used
            worker.close()
        lock.close()


def _run_locked(
    plan: Plan, quiet: bool, teachers_only: bool, mixed_threads: bool, mixed_numerics: bool, spawned: dict
) -> RunSummary:
    sweep = plan.sweep
    remove_stale_temporaries(plan)
    teachers, jobs, ok = pending_work(plan, repair=True)
    # only teachers that this run will use are read whole to check them
    used = {t.key for t in plan.teachers} if teachers_only else {k for j in jobs for k in j.teacher_keys}
    if quarantine_damaged_teachers(plan, used):
        teachers, jobs, ok = pending_work(plan)
    if teachers_only:
        jobs = []
        teachers = [t for t in plan.teachers if not teacher_done(sweep.paths.teachers, sweep.task.name, t.key)]
    needed = {d for j in jobs for d in j.deps}
    prep = [p for p in (*plan.augments, *plan.outputs) if p.key in needed and not prep_done(plan, p)]
    items = [Item(key=t.key, kind="teacher", payload=teacher_payload(plan, t)) for t in teachers]
    items = teacher_stack_items(plan, items)
    items += [
        Item(
            key=p.key,
            kind="augment" if isinstance(p, AugmentJob) else "teacher-outputs",
            deps=() if isinstance(p, AugmentJob) else (p.teacher_key, p.augment_key),
            payload=prep_payload(plan, p),
        )
        for p in prep
    ]
    items += stack_items(
        plan, [Item(key=j.key, kind="distill", deps=j.deps, payload=distill_payload(plan, j)) for j in jobs]
    )
    if items and not mixed_threads:
        check_threads(plan, ok)  # before any job runs
    if items and not mixed_numerics:
        check_numerics(plan, ok)
    prep_keys = {p.key for p in prep}
    done_teachers = {t.key for t in plan.teachers if teacher_done(sweep.paths.teachers, sweep.task.name, t.key)}
    done_teachers |= {p.key for p in (*plan.augments, *plan.outputs) if p.key not in prep_keys and prep_done(plan, p)}
    if not quiet:
        log.info(
            "%s: %d of %d teachers to train, %d of %d distillation jobs to run (%d already recorded)",
            sweep.name,
            len(teachers),
            len(plan.teachers),
            len(jobs),
            len(plan.jobs),
            len(ok),
        )
    if not items:
        return RunSummary(0, 0, 0, 0, 0, 0, len(ok), 0.0)

    metric = TASKS[sweep.task.name].metrics[0]

    def record_failure(item: Item) -> None:
        if item.kind != "distill":
            log.error(
                "%s %s failed after %d attempt(s): %s%s",
                item.kind,
                item.key,
                item.attempts,
                item.errors[-1],
                f"\n{item.traceback.rstrip()}" if item.traceback else "",
            )
            return
        write_record(
            item.payload.record(),
            unscored_record(
                sweep.name,
                item,
                metric,
                "diverged" if item.failure == "diverged" else "failed",
                error_kind=item.failure or "error",
                diverged_at_step=item.step,
                attempts=item.attempts,
                error=item.errors[-1],
                errors=item.errors,
                traceback=item.traceback,
                slot=item.slot,
                device=item.slot.split("#")[0] if item.slot else None,
            ),
        )

    prep_by_key = {p.key: p for p in (*plan.augments, *plan.outputs)}

    def is_done(item: Item) -> bool:
        if item.kind == "teacher":
            return teacher_done(sweep.paths.teachers, sweep.task.name, item.key)
        if item.key in prep_by_key:
            return prep_done(plan, prep_by_key[item.key])
        return _record_ok(item.payload.record())

    bar = None if quiet else ProgressBar(sum(len(i.jobs()) for i in items), sweep.run.slots())

    def progress(counts: dict) -> None:
        if bar is not None:
            bar.update(counts)

    try:
        result = run_engine(
            items,
            sweep.run,
            sweep.results_dir() / "logs",
            Hooks(record_failure, progress, is_done),
            done_teachers,
            spawned,
        )
    finally:
        if bar is not None:
            bar.close()
    record_skipped(plan, result, metric)
    for key, error in result.unstacked:
        log.info(f"note: {key} failed as a whole ({error}); its jobs ran alone")
    n_teach = sum(1 for i in result.done if i.kind == "teacher")
    n_prep = sum(1 for i in result.done if i.kind in ("augment", "teacher-outputs"))
    if n_prep and not quiet:
        log.info("%s: made %d augmentation runs and teacher outputs on them", sweep.name, n_prep)
    ran = [i for i in result.done + result.failed if i.kind == "distill"]
    return RunSummary(
        teachers_trained=n_teach,
        jobs_run=len(ran),
        jobs_ok=sum(1 for i in result.done if i.kind == "distill"),
        jobs_failed=sum(1 for i in result.failed if i.kind == "distill" and i.failure != "diverged"),
        jobs_diverged=sum(1 for i in result.failed if i.kind == "distill" and i.failure == "diverged"),
        jobs_skipped=sum(1 for i in result.skipped if i.kind == "distill"),
        already_done=len(ok),
        wall_seconds=result.wall,
    )


def unscored_record(sweep_name: str, item: Item, metric: str, status: str, **fields) -> dict:
    """The record of a distillation job without a score (failed, diverged or skipped): its plan
    coordinates and config from the queue item, null scores and timings, and ``fields``."""
    p = item.payload
    return {
        "key": item.key,
        "sweep": sweep_name,
        "status": status,
        **p.plan,
        "teacher_keys": p.config["teachers"],
        "config": p.config,
        "precision": job_precision(p.config),
        "numerics": NUMERICS_VERSION,
        "metric": metric,
        "scores": None,
        "score": None,
        "timings": None,
        **fields,
        "provenance": {**provenance(), "finished": time.time()},
    }


def record_skipped(plan: Plan, result, metric: str) -> None:
    """A ``skipped`` record for each distillation job not run because a job it waits for failed
    (naming that job and its error), and one line per failed dependency on stderr."""
    failed = {i.key: i for i in result.failed}
    skipped = {i.key: i for i in result.skipped}

    def first_failure(item: Item) -> Item | None:
        for d in item.deps:
            found = failed.get(d) or (first_failure(skipped[d]) if d in skipped else None)
            if found is not None:
                return found
        return None

    blocked: dict[str, int] = {}
    for item in result.skipped:
        if item.kind != "distill":
            continue
        cause = first_failure(item)
        why = (
            f"not run: {cause.kind} {cause.key} failed: {cause.errors[-1]}"
            if cause is not None
            else "not run: a job it waits for was not run"
        )
        if cause is not None:
            blocked[cause.key] = blocked.get(cause.key, 0) + 1
        write_record(
            item.payload.record(),
            unscored_record(
                plan.sweep.name,
                item,
                metric,
                "skipped",
                attempts=0,
                error=why,
                errors=[],
                traceback=None if cause is None else cause.traceback,
                slot=None,
                device=None,
            ),
        )
    for key, n in blocked.items():
        log.error(
            "%s %s failed: %d distillation job(s) that need it were not run "
            "(recorded as skipped; a rerun retries them)",
            failed[key].kind,
            key,
            n,
        )
