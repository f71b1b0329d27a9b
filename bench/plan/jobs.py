"""The plan: teacher jobs (N seeds) and distillation jobs (k-combinations x primary x repeats x
grid points), each with a deterministic key = hash of its canonical config.

A distillation job's config includes its teachers' keys, so changing a teacher invalidates
exactly its dependants, and a rerun schedules only what has no record yet.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from math import comb
from typing import Any

from bench.core.config import Sweep
from bench.core.hashing import stable_hash
from bench.core.keys import identity, params_identity
from bench.methods.table import METHODS

TEACHER_FORMAT = 1
DISTILL_FORMAT = 1


@dataclass(frozen=True)
class TeacherJob:
    """Fine-tune teacher ``index`` with seed ``seed``; stored under teachers/<task>/<key>/."""

    key: str
    index: int
    seed: int
    config: dict


@dataclass(frozen=True)
class AugmentJob:
    """Make augmentation run ``seed`` of the training set; stored under <cache>/augmented/<task>/."""

    key: str
    seed: int
    config: dict


@dataclass(frozen=True)
class OutputsJob:
    """Cache one teacher's logits on one augmented set (teachers/<task>/<teacher>/aug-<key>.npz)."""

    key: str
    teacher_key: str
    augment_key: str
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
    deps: tuple = ()  # keys of the jobs that must finish first (teachers, augmentation, outputs)


@dataclass(frozen=True)
class Plan:
    """All jobs of a sweep, teachers first."""

    sweep: Sweep
    teachers: tuple
    jobs: tuple
    augments: tuple = ()
    outputs: tuple = ()

    def counts_by_k(self) -> dict[int, int]:
        c = Counter(j.k for j in self.jobs)
        return {k: c[k] for k in self.sweep.k}


def _task_identity(sweep: Sweep) -> dict:
    return identity(sweep.task)


def _train_identity(spec: Any) -> dict:
    return identity(spec, drop=("seed",))


RESULT_RUN_FIELDS = ("precision",)  # the [run] fields that change what a model job computes


def _run_identity(sweep: Sweep) -> dict:
    """``{"precision": ...}`` for a job that trains or runs a model, empty at fp32 (the key rule:
    a field added later enters only when not at its default), so fp32 sweeps keep their keys; a
    worker reads a missing precision as fp32 (``core.config.job_precision``)."""
    return identity(sweep.run, only=RESULT_RUN_FIELDS)


def teacher_jobs(sweep: Sweep) -> tuple:
    """The N teachers: identical configs but for the seed (teacher.seed + i)."""
    out = []
    for i in range(sweep.teachers):
        seed = sweep.teacher.seed + i
        config = {
            "kind": "teacher",
            "format": TEACHER_FORMAT,
            "task": _task_identity(sweep),
            "model": _train_identity(sweep.teacher),
            "seed": seed,
            **_run_identity(sweep),
        }
        out.append(TeacherJob(key=stable_hash(config), index=i, seed=seed, config=config))
    return tuple(out)


def grid_points(sweep: Sweep) -> list[dict]:
    """Every combination of the grid axes' values ([{}] without a grid)."""
    axes = sorted(sweep.grid)
    return [dict(zip(axes, values)) for values in itertools.product(*(sweep.grid[a] for a in axes))]


def augment_jobs(sweep: Sweep, teachers: tuple) -> tuple[tuple, tuple]:
    """Augmentation runs (one per repeat, or one) and each teacher's outputs on each of them."""
    if not sweep.augment.factor:
        return (), ()
    seeds = range(sweep.repeats) if sweep.augment.per_repeat else range(1)
    augments = []
    for seed in seeds:
        config = {
            "kind": "augment",
            "format": 1,
            "task": _task_identity(sweep),
            "augment": identity(sweep.augment),
            "seed": seed,
        }
        augments.append(AugmentJob(key=stable_hash(config), seed=seed, config=config))
    outputs = []
    for a in augments:
        for t in teachers:
            config = {
                "kind": "teacher-outputs",
                "format": 1,
                "teacher": t.key,
                "augment": a.key,
                "task": _task_identity(sweep),
                **_run_identity(sweep),
            }
            outputs.append(OutputsJob(key=stable_hash(config), teacher_key=t.key, augment_key=a.key, config=config))
    return tuple(augments), tuple(outputs)


def make_plan(sweep: Sweep) -> Plan:
    """Enumerate every job of the protocol (Ilichev et al. 2021, section 5)."""
    teachers = teacher_jobs(sweep)
    augments, outputs = augment_jobs(sweep, teachers)
    output_key = {(o.teacher_key, o.augment_key): o.key for o in outputs}
    method = METHODS[sweep.method.name]
    student = _train_identity(sweep.student)
    jobs = []
    for point in grid_points(sweep):
        params = params_identity(method, {**sweep.method.params, **point})
        for k in sweep.k:
            for combo in itertools.combinations(range(sweep.teachers), k):
                primaries = combo if method.needs_primary else (None,)
                for primary in primaries:
                    for repeat in range(sweep.repeats):
                        keys = tuple(teachers[i].key for i in combo)
                        aug = augments[repeat % len(augments)] if augments else None
                        config: dict[str, Any] = {
                            "kind": "distill",
                            "format": DISTILL_FORMAT,
                            "task": _task_identity(sweep),
                            "student": student,
                            "seed": sweep.student.seed + repeat,
                            "method": {"name": method.name, "params": params},
                            "teachers": list(keys),
                            "primary": None if primary is None else teachers[primary].key,
                            "loss": method.convention,
                            **_run_identity(sweep),
                        }
                        deps = keys
                        if aug is not None:  # only then: keys of sweeps without augmentation stay as they are
                            config["augment"] = aug.key
                            config["teacher_outputs"] = [output_key[(t, aug.key)] for t in keys]
                            deps = (*keys, aug.key, *config["teacher_outputs"])
                        jobs.append(
                            DistillJob(
                                key=stable_hash(config),
                                k=k,
                                combination=combo,
                                primary=primary,
                                repeat=repeat,
                                grid=point,
                                teacher_keys=keys,
                                config=config,
                                deps=deps,
                            )
                        )
    return Plan(sweep=sweep, teachers=teachers, jobs=tuple(jobs), augments=augments, outputs=outputs)


def expected_count(n: int, k: int, repeats: int, needs_primary: bool, grid_size: int = 1) -> int:
    """Closed form of the number of jobs for one k: k*C(N,k)*r with a primary, C(N,k)*r without."""
    return (k if needs_primary else 1) * comb(n, k) * repeats * grid_size
