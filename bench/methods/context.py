"""What a distillation recipe receives: the contract between the worker (bench.engines.runners,
which builds it from a job) and a method's ``run`` (built-in or a plugin, docs/extending.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DistillContext:
    """Everything a method's recipe receives."""

    data: Any  # TaskData
    spec: Any  # the student's TrainSpec (seed = this repeat's seed)
    seed: int
    params: dict  # method parameters at this grid point
    teacher_logits: dict  # split -> mean of the k teachers' logits (float32)
    primary_logits: dict | None  # split -> the primary teacher's logits (methods with a primary)
    teacher_keys: tuple
    primary: str | None
    teachers_root: str
    device: Any
    teacher_outputs: tuple = ()  # each teacher's stored outputs as loaded (e.g. the LM's top-K caches)
    fit: dict = field(default_factory=dict)  # the recipe reports steps and seconds here
    teacher_work: dict = field(default_factory=dict)  # the recipe adds notes on its teacher targets here
