"""The typed contract between the driver, the engines and the worker: one job as it travels.

The driver builds a ``JobPayload`` per job from the plan (what to compute, where to store it, the
run options a worker applies); an engine stamps each attempt (``dispatched``: attempt, slot,
device, queue wait); it crosses a process boundary as one JSON line (``to_wire``) and the worker
reads it back with ``from_wire``, which checks the format version and every field, so a driver
and a worker of different bench versions stop with one clear line instead of a KeyError mid-job.
The record a job writes back is checked by ``bench.core.records`` (``write_record``), its
schema version stored in it.

A ``stack`` payload (``run.stack``, format 2; teachers from format 3) carries distillation jobs, or
teachers, in ``members`` (all of one kind), trained together as one batched model by one worker
(``bench.training.stack``); it writes one record (a teacher: its folder) per member and its reply
says how each member ended.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

PAYLOAD_FORMAT = 3  # 2: the "stack" kind and its members; 3: stacks of teachers
KINDS = ("teacher", "augment", "teacher-outputs", "distill", "stack")
STACKABLE = ("distill", "teacher")  # the kinds of job a stack may hold (all its members of one)


@dataclass(frozen=True)
class JobPaths:
    """Absolute output roots a job reads and writes: stored teachers and the data cache; and the
    project root, where the worker runs the job, so the config's relative data, tokenizer and
    weights paths (kept as written: they are in its key) resolve as the spec's did."""

    teachers: str
    cache: str
    root: str = ""  # "": the worker's own folder (payloads and records made before it existed)


@dataclass(frozen=True)
class JobPayload:
    """One job for a worker: what to compute and where, and (per attempt) where it runs."""

    kind: str  # one of KINDS
    key: str  # the job's key (plan.jobs): its record or store is named after it
    config: dict  # the canonical config the key hashes
    paths: JobPaths
    threads: int  # torch threads (engines.dispatch.job_threads): scores depend on it
    deterministic: bool  # run.deterministic, applied before the job
    plan: dict  # coordinates: sweep and the teacher index, or k, combination, primary, repeat, grid
    record_path: str | None = None  # distillation jobs: where the record goes
    student_path: str | None = None  # distillation jobs: where to save the student (run.save_students), or None
    energy: dict | None = None  # run.energy's power model and the slots sharing the device (core.energy.settings)
    attempt: int = 0  # set by the engine for each attempt ...
    slot: str = ""
    device: str = "cpu"
    queue_wait: float = 0.0  # seconds from its dependencies being met to its start
    members: tuple[JobPayload, ...] = ()  # a stack: its distillation jobs or teachers (each a complete payload)
    format: int = PAYLOAD_FORMAT

    def dispatched(self, attempt: int, slot: str, device: str, queue_wait: float) -> JobPayload:
        """This job as one attempt on one slot (a stack's members too)."""
        return dataclasses.replace(
            self,
            attempt=attempt,
            slot=slot,
            device=device,
            queue_wait=queue_wait,
            members=tuple(m.dispatched(attempt, slot, device, queue_wait) for m in self.members),
        )

    def record(self) -> str:
        """Where a distillation job's record goes (only distillation jobs have one)."""
        if self.record_path is None:
            raise ValueError(f"{self.kind} job {self.key} has no record path")
        return self.record_path

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able dict (``from_wire`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: Any) -> JobPayload:
        """The payload in ``data``; raises ValueError naming what is wrong (format, field, type)."""
        if not isinstance(data, dict):
            raise ValueError(f"a job payload is a JSON object, got {type(data).__name__}")
        if data.get("format") != PAYLOAD_FORMAT:
            raise ValueError(
                f"job payload format {data.get('format')!r}, this worker reads {PAYLOAD_FORMAT}: "
                f"the driver and the worker run different versions of bench"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = (
            set(data) - names,
            {n for n in ("kind", "key", "config", "paths", "threads", "deterministic", "plan") if n not in data},
        )
        if unknown or missing:
            raise ValueError(f"job payload: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
        checks = {
            "kind": lambda v: v in KINDS,
            "key": lambda v: isinstance(v, str) and v,
            "config": lambda v: isinstance(v, dict),
            "threads": lambda v: isinstance(v, int) and v >= 0,
            "deterministic": lambda v: isinstance(v, bool),
            "plan": lambda v: isinstance(v, dict),
            "record_path": lambda v: v is None or isinstance(v, str),
            "student_path": lambda v: v is None or isinstance(v, str),
            "energy": lambda v: v is None or isinstance(v, dict),
            "attempt": lambda v: isinstance(v, int),
            "slot": lambda v: isinstance(v, str),
            "device": lambda v: isinstance(v, str),
            "queue_wait": lambda v: isinstance(v, (int, float)),
            "members": lambda v: isinstance(v, (list, tuple)) and (data.get("kind") == "stack") == bool(v),
            "paths": lambda v: (
                isinstance(v, dict)
                and {"teachers", "cache"} <= set(v) <= {"teachers", "cache", "root"}
                and all(isinstance(p, str) for p in v.values())
            ),
        }
        for name, ok in checks.items():
            if name in data and not ok(data[name]):
                raise ValueError(f"job payload: field {name!r} has an unexpected value {data[name]!r}")
        members = tuple(cls.from_wire(m) for m in data.get("members", ()))
        if members and ({m.kind for m in members} - {members[0].kind} or members[0].kind not in STACKABLE):
            raise ValueError("job payload: a stack's members are distillation jobs or teachers, all of one kind")
        return cls(**{**data, "paths": JobPaths(**data["paths"]), "members": members})
