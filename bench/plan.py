"""The plan: teacher jobs (N seeds) and distillation jobs (k-combinations x primary x repeats x
grid points), each with a deterministic key = hash of its canonical config.

A distillation job's config includes its teachers' keys, so changing a teacher invalidates
exactly its dependants, and a rerun schedules only what has no record yet.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from dataclasses import asdict, dataclass
from math import comb
from typing import Any

from bench.methods import METHODS
from bench.spec import Sweep

TEACHER_FORMAT = 1
DISTILL_FORMAT = 1


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object that does not depend on key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TeacherJob:
    """Fine-tune teacher ``index`` with seed ``seed``; stored under teachers/<task>/<key>/."""

    key: str
    index: int
    seed: int
    config: dict


@dataclass(frozen=True)
class DistillJob:
    """Distil one student from the teachers ``combination`` (indices), with ``primary`` if the
    method has single-teacher parts, for one repeat and one grid point."""

    key: str
    k: int
    combination: tuple
    primary: int | None
    repeat: int
    grid: dict
    teacher_keys: tuple
    config: dict


@dataclass(frozen=True)
class Plan:
    """All jobs of a sweep, teachers first."""

    sweep: Sweep
    teachers: tuple
    jobs: tuple

    def counts_by_k(self) -> dict[int, int]:
        c = Counter(j.k for j in self.jobs)
        return {k: c[k] for k in self.sweep.k}


def _task_identity(sweep: Sweep) -> dict:
    return asdict(sweep.task)


def _train_identity(spec: Any) -> dict:
    d = asdict(spec)
    d.pop("seed")
    return d


def teacher_jobs(sweep: Sweep) -> tuple:
    """The N teachers: identical configs but for the seed (teacher.seed + i)."""
    out = []
    for i in range(sweep.teachers):
        seed = sweep.teacher.seed + i
        config = {"kind": "teacher", "format": TEACHER_FORMAT, "task": _task_identity(sweep),
                  "model": _train_identity(sweep.teacher), "seed": seed}
        out.append(TeacherJob(key=stable_hash(config), index=i, seed=seed, config=config))
    return tuple(out)


def grid_points(sweep: Sweep) -> list[dict]:
    """Every combination of the grid axes' values ([{}] without a grid)."""
    axes = sorted(sweep.grid)
    return [dict(zip(axes, values)) for values in itertools.product(*(sweep.grid[a] for a in axes))]


def make_plan(sweep: Sweep) -> Plan:
    """Enumerate every job of the protocol (Ilichev et al. 2021, section 5)."""
    teachers = teacher_jobs(sweep)
    method = METHODS[sweep.method.name]
    student = _train_identity(sweep.student)
    jobs = []
    for point in grid_points(sweep):
        params = {**sweep.method.params, **point}
        for k in sweep.k:
            for combo in itertools.combinations(range(sweep.teachers), k):
                primaries = combo if method.needs_primary else (None,)
                for primary in primaries:
                    for repeat in range(sweep.repeats):
                        keys = tuple(teachers[i].key for i in combo)
                        config = {
                            "kind": "distill", "format": DISTILL_FORMAT, "task": _task_identity(sweep),
                            "student": student, "seed": sweep.student.seed + repeat,
                            "method": {"name": method.name, "params": params},
                            "teachers": list(keys),
                            "primary": None if primary is None else teachers[primary].key,
                            "loss": method.convention,
                        }
                        jobs.append(DistillJob(key=stable_hash(config), k=k, combination=combo,
                                               primary=primary, repeat=repeat, grid=point,
                                               teacher_keys=keys, config=config))
    return Plan(sweep=sweep, teachers=teachers, jobs=tuple(jobs))


def expected_count(n: int, k: int, repeats: int, needs_primary: bool, grid_size: int = 1) -> int:
    """Closed form of the number of jobs for one k: k*C(N,k)*r with a primary, C(N,k)*r without."""
    return (k if needs_primary else 1) * comb(n, k) * repeats * grid_size
