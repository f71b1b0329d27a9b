"""Sweep specs: a TOML file loaded into frozen dataclasses and validated before anything runs.

Every user error names the file, the field and what was expected (``SpecError``).
Specs are data: they are parsed with ``tomllib`` and never executed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from math import comb
from typing import Any, get_args, get_origin, get_type_hints

from bench.core.config import (
    CONTRAST_KINDS,
    DESIGN_KINDS,
    DESIGN_STATISTICS,
    HYPOTHESIS_NAMES,
    PRECISIONS,
    AugmentSpec,
    DesignSpec,
    MethodSpec,
    PathsSpec,
    ReportSpec,
    RunSpec,
    SlurmSpec,
    Sweep,
    TaskSpec,
    TrainSpec,
    locate,
    parse_device,
    project_root,
)
from bench.core.energy import PowerModel
from bench.core.errors import SpecError, did_you_mean
from bench.methods.table import METHODS
from bench.models.builders import MODELS, check_pretrained_source
from bench.spec.compose import apply_sets, read_document
from bench.tasks.base import ALL_VIEWS
from bench.tasks.table import TASKS, check_models

MAX_JOBS = 1_000_000  # beyond this a plan is a typo, not a study
# Resource bombs are refused before any work (or combinatorics): every bound is far beyond a real study.
MAX_NAME = 100  # sweep name: one path component under each output root
MAX_STRING = 4096  # any string value (paths are at most PATH_MAX)
MAX_INT = 1 << 53  # any integer value
MAX_TEACHERS = 1000  # N: every teacher is a full fine-tune
MAX_REPEATS = 10_000
MAX_SEED = 2**31 - 1  # seeds + offsets stay valid for numpy (< 2**32) and torch
MAX_EPOCHS = 100_000
MAX_SIZE = 1 << 20  # batch sizes, lengths, vocabularies
MAX_DEVICES = 64
MAX_JOBS_PER_DEVICE = 64  # one worker process per slot
MAX_SLOTS = 256  # devices x jobs_per_device
MAX_THREADS = 1024
MAX_RETRIES = 100
MAX_STACK = 4096  # run.stack: students trained together
MAX_SECONDS = 10**7  # timeouts and waits (about 115 days)

_TOP_KEYS = {
    "name",
    "teachers",
    "k",
    "repeats",
    "task",
    "teacher",
    "student",
    "method",
    "grid",
    "run",
    "paths",
    "augment",
    "design",
    "report",
    "extends",  # read by bench.spec.compose before validation
}


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table"}
    if tp in names:
        return names[tp]
    origin = get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0]).removeprefix('an ').removeprefix('a ')}s"
    args = [a for a in get_args(tp) if a is not type(None)]
    if args:
        return _type_name(args[0])
    return str(tp)


def _short(value: Any) -> str:
    """The repr of a value, cut to one short line for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _coerce(value: Any, tp: Any, file: str, name: str) -> Any:
    """Check one TOML value against a field type; ints are accepted where floats are expected."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is not None and type(None) in args:  # Optional
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, file, name)
    if origin is tuple:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise SpecError(file, name, f"expected {_type_name(tp)}, got {_short(value)}")
        if len(value) > 1000:
            raise SpecError(file, name, f"expected at most 1000 values, got {len(value)}")
        return tuple(_coerce(v, args[0], file, f"{name}[{i}]") for i, v in enumerate(value))
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        dict: isinstance(value, dict),
    }[tp]
    if not ok:
        raise SpecError(file, name, f"expected {_type_name(tp)}, got {_short(value)} ({type(value).__name__})")
    if tp is float and not math.isfinite(value):
        raise SpecError(file, name, f"expected a finite number, got {value!r}")
    if tp is int and abs(value) > MAX_INT:
        raise SpecError(file, name, f"expected an integer of magnitude at most 2^53, got {_short(value)}")
    if tp is str and len(value) > MAX_STRING:
        raise SpecError(file, name, f"expected a string of at most {MAX_STRING} characters, got {len(value)}")
    return float(value) if tp is float else value


def _build(cls: type, data: Any, file: str, prefix: str, skip: tuple[str, ...] = ()) -> Any:
    """Build a frozen dataclass from a TOML table, rejecting unknown keys with a hint."""
    if not isinstance(data, dict):
        raise SpecError(file, prefix, f"expected a table, got {_short(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in data:
        if key not in fields:
            raise SpecError(
                file, f"{prefix}.{key}", f"unknown key{did_you_mean(key, fields)}; expected one of: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], file, f"{prefix}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(file, f"{prefix}.{name}", f"missing; expected {_type_name(hints[name])}")
    return cls(**kwargs)


def _one_of(file: str, name: str, what: str, value: Any, choices: Sequence[str]) -> None:
    """Refuse a value outside ``choices``, with the nearest choice as a hint."""
    if value not in choices:
        raise SpecError(
            file,
            name,
            f"unknown {what} {value!r}{did_you_mean(str(value), choices)}; expected one of: {', '.join(choices)}",
        )


def _positive(file: str, name: str, value: float, minimum: float = 1, maximum: float | None = None) -> None:
    if value < minimum:
        raise SpecError(file, name, f"expected a value >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise SpecError(file, name, f"expected a value <= {maximum:,}, got {value:,}")


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("linear", "step", "constant")


def _check_train(spec: TrainSpec, file: str, role: str) -> None:

    if spec.model not in MODELS:
        raise SpecError(
            file,
            f"{role}.model",
            f"unknown model '{spec.model}'{did_you_mean(spec.model, MODELS)}; expected one of: {', '.join(MODELS)}",
        )
    _positive(file, f"{role}.epochs", spec.epochs, 1, MAX_EPOCHS)
    _positive(file, f"{role}.batch_size", spec.batch_size, 1, MAX_SIZE)
    if not spec.lr > 0:
        raise SpecError(file, f"{role}.lr", f"expected a learning rate > 0, got {spec.lr}")
    if not 0 <= spec.warmup_ratio < 1:
        raise SpecError(file, f"{role}.warmup_ratio", f"expected 0 <= value < 1, got {spec.warmup_ratio}")
    _positive(file, f"{role}.weight_decay", spec.weight_decay, 0)
    _positive(file, f"{role}.max_grad_norm", spec.max_grad_norm, 0)
    _positive(file, f"{role}.seed", spec.seed, 0, MAX_SEED)
    for key, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        _one_of(file, f"{role}.{key}", key, getattr(spec, key), choices)
    if not 0 <= spec.momentum < 1:
        raise SpecError(file, f"{role}.momentum", f"expected 0 <= momentum < 1, got {spec.momentum}")
    milestones = list(spec.milestones)
    if len(milestones) > 100 or milestones != sorted(milestones) or not all(0 < m < 1 for m in milestones):
        raise SpecError(
            file,
            f"{role}.milestones",
            f"expected increasing fractions of training between 0 and 1, got {list(spec.milestones)}",
        )
    MODELS[spec.model].check(spec, file, role)


def _method(data: Any, file: str) -> MethodSpec:

    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict):
        raise SpecError(file, "method", f"expected a table or a method name, got {_short(data)}")
    name = data.get("name", "kd")
    if not isinstance(name, str) or name not in METHODS:
        raise SpecError(
            file,
            "method.name",
            f"unknown method {name!r}{did_you_mean(str(name), METHODS)}; expected one of: {', '.join(METHODS)}",
        )
    method = METHODS[name]
    params = {}
    for key, value in data.items():
        if key == "name":
            continue
        if key not in method.params:
            raise SpecError(
                file,
                f"method.{key}",
                f"unknown parameter of method '{name}'"
                f"{did_you_mean(key, method.params)}; expected one of: "
                f"{', '.join(method.params)}",
            )
        params[key] = method.check_param(key, value, file, f"method.{key}")
    return MethodSpec(name=name, params={**method.defaults(), **params})


def _grid(data: Any, method: MethodSpec, file: str) -> dict:

    if not isinstance(data, dict):
        raise SpecError(file, "grid", f"expected a table of axis = [values], got {_short(data)}")
    m = METHODS[method.name]
    grid = {}
    for axis, values in data.items():
        if axis not in m.params:
            raise SpecError(
                file,
                f"grid.{axis}",
                f"not a parameter of method '{method.name}'"
                f"{did_you_mean(axis, m.params)}; expected one of: {', '.join(m.params)}",
            )
        if m.params[axis].kind == "indices":
            raise SpecError(
                file,
                f"grid.{axis}",
                f"'{axis}' is a list and not a grid axis; expected it in [method] and a numeric parameter here",
            )
        if not isinstance(values, list) or not 0 < len(values) <= 1000:
            raise SpecError(
                file, f"grid.{axis}", f"expected a non-empty list of at most 1000 values, got {_short(values)}"
            )
        checked = tuple(m.check_param(axis, v, file, f"grid.{axis}[{i}]") for i, v in enumerate(values))
        if len(set(checked)) != len(checked):
            raise SpecError(file, f"grid.{axis}", f"expected distinct values, got {_short(values)}")
        grid[axis] = checked
    return grid


def _check_seeds(
    teacher: TrainSpec, student: TrainSpec, n: int, repeats: int, offsets: tuple[int, ...], file: str
) -> None:
    """Refuse a student seed (or a data-order seed the method derives from it) that is also a
    teacher's seed: that student would replay the teacher's exact batch (and view) order."""
    teachers = {teacher.seed + i for i in range(n)}
    students = {student.seed + j + o for j in range(repeats) for o in offsets}
    clash = sorted(teachers & students)
    if clash:
        raise SpecError(
            file,
            "student.seed",
            f"student seeds {student.seed}..{max(students)} (student.seed + repeat"
            f"{' + data-order offsets ' + str(list(offsets)) if offsets != (0,) else ''}) overlap teacher "
            f"seeds {teacher.seed}..{teacher.seed + n - 1} (teacher.seed + i) at {clash[:5]}; expected "
            f"disjoint ranges, e.g. student.seed = {teacher.seed + n}",
        )


def parse_sweep(data: dict, file: str, inputs: bool = True) -> Sweep:
    """Validate a parsed TOML document and build the Sweep; raises SpecError on the first problem.

    This is the one place a spec is validated, in this order (each step may assume the ones before
    it passed, and the cheap, structural ones come first):

    1. ``_top``: no unknown top-level key, the required ones present; ``_root``: the project root
       every relative path resolves from (``paths.root``, else ``core.config.project_root``);
    2. ``_team``: name, N teachers (bounded before any combinatorics), k, repeats, plan size;
    3. ``_task``: a known task (``TASKS``), its sizes, views, LM-only fields, its local data folder;
    4. ``_models``: teacher and student fields, then whether their model families fit the task and
       their params are valid (``tasks.table.check_models`` -> ``MODELS[...].check``);
    5. ``_method_and_grid``: a known method, its parameters, its own check (``Method.check``, e.g.
       layer indices against the teacher's depth), seeds kept apart, the grid and the plan size;
    6. ``[run]`` (``check_run``: engine, devices, slots, Slurm), ``[paths]``, ``[augment]``, ``[design]``;
    7. ``_sources``: hub names that must resolve to something loadable (tokenizer, augmentation model).

    Paths: the output roots come out absolute (from the root); data, tokenizer and weights keep the
    value as written (it is in the keys) and are checked, and later read, from the root
    (``Sweep.locate``; workers run their jobs in the root).

    What depends on the machine or on stored results is checked by ``bench run`` only, before the
    sweep lock: devices, engines and the network (``driver.preflight``) and the thread count of
    existing results (``driver.run.check_threads``). ``inputs=False`` leaves out the checks of the
    data files and hub sources (a report rebuilt from an archive needs the keys, not the data).
    """
    _top(data, file)
    root = _root(data, file)
    name, n, k, repeats, n_jobs = _team(data, file)
    task = _task(data["task"], file, root, inputs)
    task, teacher, student = _models(data, task, file, root)
    method, grid = _method_and_grid(data, teacher, student, n, repeats, n_jobs, file)
    run = _run(data.get("run", {}), file, root)
    check_run(run, file, "run")
    paths = _paths(data.get("paths", {}), file, root)
    augment = _augment(data.get("augment", {}), task, file)
    design = _design(data.get("design", {}), k, file)
    report = _report(data.get("report", {}), file)
    if inputs:
        _sources(task, augment, file, root)
    return Sweep(
        name=name,
        task=task,
        teacher=teacher,
        student=student,
        method=method,
        teachers=n,
        k=tuple(sorted(k)),
        repeats=repeats,
        grid=grid,
        run=run,
        paths=paths,
        augment=augment,
        source=file,
        design=design,
        report=report,
    )


def _top(data: dict, file: str) -> None:
    for key in data:
        if key not in _TOP_KEYS:
            raise SpecError(
                file, key, f"unknown key{did_you_mean(key, _TOP_KEYS)}; expected one of: {', '.join(sorted(_TOP_KEYS))}"
            )
    for key in ("name", "teachers", "task", "teacher", "student"):
        if key not in data:
            raise SpecError(file, key, "missing (required)")


def _team(data: dict, file: str) -> tuple[str, int, tuple[int, ...], int, int]:
    """Name, N, k, repeats and an upper bound of the plan's size before the grid."""
    name = _coerce(data["name"], str, file, "name")
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise SpecError(file, "name", f"expected letters, digits, '-', '_' or '.', got {_short(name)}")
    if len(name) > MAX_NAME:
        raise SpecError(file, "name", f"expected at most {MAX_NAME} characters (one folder name), got {len(name)}")
    n = _coerce(data["teachers"], int, file, "teachers")
    _positive(file, "teachers", n, 1, MAX_TEACHERS)  # before any combinatorics on n
    k = _coerce(data.get("k", list(range(1, n + 1))), tuple[int, ...], file, "k")
    if not k:
        raise SpecError(file, "k", f"expected a non-empty list of team sizes 1 <= k <= teachers ({n}), got []")
    for i, kk in enumerate(k):
        if not 1 <= kk <= n:
            raise SpecError(file, f"k[{i}]", f"expected 1 <= k <= teachers ({n}), got {kk}")
    if len(set(k)) != len(k):
        raise SpecError(file, "k", f"expected distinct values, got {list(k)}")
    repeats = _coerce(data.get("repeats", 1), int, file, "repeats")
    _positive(file, "repeats", repeats, 1, MAX_REPEATS)
    n_jobs = sum(kk * comb(n, kk) for kk in k) * repeats  # an upper bound (with a primary), before the grid
    if n_jobs > MAX_JOBS:
        raise SpecError(
            file,
            "teachers",
            f"expected a plan of at most {MAX_JOBS:,} jobs; teachers = {n} with "
            f"k = {list(k)} and repeats = {repeats} gives up to {n_jobs:,}",
        )
    return name, n, k, repeats, n_jobs


def _root(data: dict, file: str) -> str:
    """The absolute project root: ``paths.root`` (relative to the spec's folder) when given (the
    spec a run saves states it), else the nearest folder up from the spec's holding a project
    marker (``core.config.project_root``)."""
    paths = data.get("paths")
    given = paths.get("root") if isinstance(paths, dict) else None
    if given is None or given == "":
        return str(project_root(file))
    if not isinstance(given, str):
        raise SpecError(file, "paths.root", f"expected a folder path, got {_short(given)}")
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(file)), os.path.expanduser(given)))
    if not os.path.isdir(root):
        raise SpecError(file, "paths.root", f"expected an existing folder, got {given!r}")
    return root


def _paths(data: Any, file: str, root: str) -> PathsSpec:
    """The output roots, absolute from the project root (so is ``root`` itself)."""
    paths = _build(PathsSpec, data, file, "paths")
    absolute = {
        f.name: os.path.normpath(os.path.join(root, os.path.expanduser(getattr(paths, f.name))))
        for f in dataclasses.fields(PathsSpec)
        if f.name != "root"
    }
    return PathsSpec(**absolute, root=root)


def _where(root: str) -> str:
    return f"(relative paths are taken from the project root {root}, docs/architecture.md: Contracts)"


def _task(task_data: Any, file: str, root: str, inputs: bool = True) -> TaskSpec:
    """The task spec; LM-only fields are refused for other tasks when written, even at their default."""
    if isinstance(task_data, str):
        task_data = {"name": task_data}
    task = _build(TaskSpec, task_data, file, "task")
    if task.name not in TASKS:
        raise SpecError(
            file,
            "task.name",
            f"unknown task '{task.name}'{did_you_mean(task.name, TASKS)}; expected one of: {', '.join(TASKS)}",
        )
    _positive(file, "task.max_length", task.max_length, 2, MAX_SIZE)
    _positive(file, "task.split_seed", task.split_seed, 0, MAX_SEED)
    for sub in ("train_subset", "eval_subset"):
        if getattr(task, sub) is not None:
            _positive(file, f"task.{sub}", getattr(task, sub))

    if task.views and task.name != "cifar10":
        raise SpecError(file, "task.views", f"training views are for task 'cifar10'; expected 0 for '{task.name}'")
    if not 0 <= task.views <= ALL_VIEWS:
        raise SpecError(
            file, "task.views", f"expected 0 <= views <= {ALL_VIEWS} (all crop/flip views), got {task.views}"
        )
    for key in ("vocab_size", "teacher_topk", "lambada"):
        if task.name != "lm" and key in task_data:
            raise SpecError(file, f"task.{key}", f"only for task 'lm'; expected no {key} for '{task.name}'")
    if task.name == "lm":
        _check_lm_task(task, file, root, inputs)
    elif inputs and task.data is not None and not os.path.isdir(locate(task.data, root)):
        raise SpecError(file, "task.data", f"expected an existing folder, got {task.data!r} {_where(root)}")
    return task


def _models(data: dict, task: TaskSpec, file: str, root: str) -> tuple[TaskSpec, TrainSpec, TrainSpec]:
    """Teacher and student specs, checked against the task (local weights folders as found from the
    root); the task's tokenizer defaults to the teacher's (a local BPE for LMs without one)."""
    teacher = _build(TrainSpec, data["teacher"], file, "teacher")
    student = _build(TrainSpec, data["student"], file, "student")
    _check_train(teacher, file, "teacher")
    _check_train(student, file, "student")
    if task.name == "lm" and task.tokenizer is None:
        task = dataclasses.replace(task, tokenizer=teacher.pretrained or "bpe")
    if task.tokenizer is None and teacher.pretrained is not None:
        task = dataclasses.replace(task, tokenizer=teacher.pretrained)
    check_models(task, _located(teacher, root), _located(student, root), file)
    return task, teacher, student


def _located(spec: TrainSpec, root: str) -> TrainSpec:
    """``spec`` with its pretrained weights as found from the root, for the checks only."""
    return dataclasses.replace(spec, pretrained=spec.pretrained and locate(spec.pretrained, root))


def _method_and_grid(
    data: dict, teacher: TrainSpec, student: TrainSpec, n: int, repeats: int, n_jobs: int, file: str
) -> tuple[MethodSpec, dict]:
    method = _method(data.get("method", {"name": "kd"}), file)
    recipe = METHODS[method.name]
    if recipe.check is not None:
        recipe.check(teacher, student, method.params, file)
    _check_seeds(teacher, student, n, repeats, recipe.seed_offsets, file)
    grid = _grid(data.get("grid", {}), method, file)
    points = math.prod(len(v) for v in grid.values())
    if n_jobs * points > MAX_JOBS:
        raise SpecError(
            file,
            "grid",
            f"expected a plan of at most {MAX_JOBS:,} jobs; {points:,} grid points x up to "
            f"{n_jobs:,} jobs per point gives up to {n_jobs * points:,}",
        )
    return method, grid


def _augment(data: Any, task: TaskSpec, file: str) -> AugmentSpec:
    augment = _build(AugmentSpec, data, file, "augment")
    _positive(file, "augment.factor", augment.factor, 0, 1000)
    _positive(file, "augment.candidates", augment.candidates, 1, 1000)
    if not 0 <= augment.p <= 1:
        raise SpecError(file, "augment.p", f"expected a probability 0 <= p <= 1, got {augment.p}")
    if augment.factor and TASKS[task.name].modality != "text":
        raise SpecError(file, "augment.factor", f"augmentation is for text tasks; task '{task.name}' is not one")
    return augment


MAX_LOOKS = 1000


def _report(data: Any, file: str) -> ReportSpec:
    """The [report] table: a known headline contrast and a failure rule."""
    report = _build(ReportSpec, data, file, "report")
    _one_of(file, "report.contrast", "contrast", report.contrast, CONTRAST_KINDS)
    _positive(file, "report.failure_mad", report.failure_mad, 0)
    for i, name in enumerate(report.order):
        _one_of(file, f"report.order[{i}]", "hypothesis", name, HYPOTHESIS_NAMES)
    if sorted(report.order) != sorted(HYPOTHESIS_NAMES):
        raise SpecError(
            file, "report.order", f"expected each of {', '.join(HYPOTHESIS_NAMES)} once, got {list(report.order)}"
        )
    if len(report.weights) != len(report.order):
        raise SpecError(
            file,
            "report.weights",
            f"expected {len(report.order)} weights, one per report.order entry, got {len(report.weights)}",
        )
    for i, w in enumerate(report.weights):
        _positive(file, f"report.weights[{i}]", w, 0, 1)
    if not 0 < sum(report.weights) <= 1 + 1e-9:
        raise SpecError(
            file,
            "report.weights",
            f"expected weights summing to more than 0 and at most 1, got {sum(report.weights):g}",
        )
    return report


def _design(data: Any, k: tuple[int, ...], file: str) -> DesignSpec:
    """The [design] table: a known kind and statistic; an adaptive design compares a k of the
    sweep (other than 1) with k = 1, so both must be planned."""
    design = _build(DesignSpec, data, file, "design")
    for key, choices in (("kind", DESIGN_KINDS), ("statistic", DESIGN_STATISTICS)):
        _one_of(file, f"design.{key}", key, getattr(design, key), choices)
    if not 0 < design.error < 1:
        raise SpecError(file, "design.error", f"expected an error rate 0 < error < 1, got {design.error}")
    _positive(file, "design.tolerance", design.tolerance, 0)
    if not 0 < design.budget <= 1:
        raise SpecError(
            file,
            "design.budget",
            f"expected a fraction 0 < budget <= 1 of the plan's student jobs, got {design.budget}",
        )
    _positive(file, "design.looks", design.looks, 1, MAX_LOOKS)
    _positive(file, "design.seed", design.seed, 0, MAX_SEED)
    if design.kind == "adaptive":
        target = design.k or max(k)
        if 1 not in k or target not in k or target == 1:
            raise SpecError(
                file,
                "design.k",
                f"expected an adaptive design to compare a planned k > 1 with k = 1, both in k = {list(k)}; "
                f"got design.k = {design.k} (0: the largest k)",
            )
    return design


def _sources(task: TaskSpec, augment: AugmentSpec, file: str, root: str) -> None:
    """Hub names that must be loadable: the tokenizer and the augmentation model (local folders as
    found from the root)."""
    if task.tokenizer not in (None, "bpe"):
        check_pretrained_source(locate(task.tokenizer, root), file, "task.tokenizer")
    if augment.factor:
        check_pretrained_source(locate(augment.model, root), file, "augment.model")


def _check_lm_task(task: TaskSpec, file: str, root: str, inputs: bool = True) -> None:
    if task.data is None or not (task.data.startswith("hub:") or not inputs or os.path.isfile(locate(task.data, root))):
        raise SpecError(
            file, "task.data", f"expected a text file or 'hub:NAME[:CONFIG]', got {task.data!r} {_where(root)}"
        )
    if inputs and task.lambada is not None and not os.path.isfile(locate(task.lambada, root)):
        raise SpecError(
            file, "task.lambada", f"expected an existing LAMBADA jsonl file, got {task.lambada!r} {_where(root)}"
        )
    _positive(file, "task.vocab_size", task.vocab_size, 258, MAX_SIZE)
    _positive(file, "task.teacher_topk", task.teacher_topk, 0, MAX_SIZE)


def _run(data: Any, file: str, root: str) -> RunSpec:
    """[run]; a Slurm log folder, like every path of the spec, from the project root."""
    if not isinstance(data, dict):
        raise SpecError(file, "run", f"expected a table, got {data!r}")
    slurm = _build(SlurmSpec, data.get("slurm", {}), file, "run.slurm")
    if slurm.log_directory:
        slurm = dataclasses.replace(slurm, log_directory=os.path.join(root, os.path.expanduser(slurm.log_directory)))
    energy = _build(PowerModel, data.get("energy", {}), file, "run.energy")
    rest = {k: v for k, v in data.items() if k not in ("slurm", "stack", "energy")}
    run = _build(RunSpec, rest, file, "run", skip=("slurm", "stack", "energy"))
    return dataclasses.replace(run, slurm=slurm, stack=data.get("stack", RunSpec.stack), energy=energy)


ENGINE_NAMES = ("local", "dask", "slurm")
SAVE_STUDENTS = ("none", "best", "all")  # run.save_students (bench/driver/students.py)
FAILURE_KINDS = ("error", "crash", "timeout", "oom", "diverged", "network")


def _check_precision(run: RunSpec, file: str, prefix: str) -> None:
    """``run.precision`` is one of ``PRECISIONS``; fp16 on a CPU device (autocast without a
    GradScaler, which is CUDA's) only where this torch can autocast to float16 on CPU."""
    if run.precision not in PRECISIONS:
        raise SpecError(
            file,
            f"{prefix}.precision",
            f"unknown precision {run.precision!r}{did_you_mean(run.precision, PRECISIONS)}; "
            f"expected one of: {', '.join(PRECISIONS)}",
        )
    if run.precision == "fp16" and "cpu" in run.devices:
        from bench.training.loop import cpu_autocast_supported  # lazy: torch only for an fp16 spec with a CPU device

        if not cpu_autocast_supported("fp16"):
            raise SpecError(
                file,
                f"{prefix}.precision",
                'this torch cannot autocast to float16 on CPU; expected "bf16" or "fp32" with a CPU device, '
                "or fp16 on CUDA devices only",
            )


def check_run(run: RunSpec, file: str, prefix: str) -> None:
    """Validate the [run] table (also used for CLI overrides, with prefix '--...')."""

    if not run.devices:
        raise SpecError(file, f"{prefix}.devices", "expected at least one device")
    if len(run.devices) > MAX_DEVICES:
        raise SpecError(file, f"{prefix}.devices", f"expected at most {MAX_DEVICES} devices, got {len(run.devices)}")
    for i, d in enumerate(run.devices):
        try:
            parse_device(d)
        except ValueError as e:
            raise SpecError(file, f"{prefix}.devices[{i}]", str(e)) from None
    _positive(file, f"{prefix}.jobs_per_device", run.jobs_per_device, 1, MAX_JOBS_PER_DEVICE)
    if run.slots() > MAX_SLOTS:
        raise SpecError(
            file,
            f"{prefix}.jobs_per_device",
            f"expected at most {MAX_SLOTS} slots (worker processes) "
            f"in all; {len(run.devices)} devices x {run.jobs_per_device} jobs per device gives "
            f"{run.slots()}",
        )
    _positive(file, f"{prefix}.threads_per_job", run.threads_per_job, 0, MAX_THREADS)
    _positive(file, f"{prefix}.retries", run.retries, 0, MAX_RETRIES)
    _positive(file, f"{prefix}.timeout", run.timeout, 0, MAX_SECONDS)
    _positive(file, f"{prefix}.max_jobs_per_worker", run.max_jobs_per_worker, 0)
    for i, kind in enumerate(run.retry_on):
        if kind not in FAILURE_KINDS:
            raise SpecError(
                file,
                f"{prefix}.retry_on[{i}]",
                f"unknown failure kind {kind!r}{did_you_mean(kind, FAILURE_KINDS)}; "
                f"expected some of: {', '.join(FAILURE_KINDS)}",
            )
    for name, value in dataclasses.asdict(run.energy).items():
        _positive(file, f"{prefix}.energy.{name}", value, 1.0 if name == "pue" else 0.0, 1e6)
    if run.save_students not in SAVE_STUDENTS:
        raise SpecError(
            file,
            f"{prefix}.save_students",
            f"expected one of: {', '.join(SAVE_STUDENTS)}, got {run.save_students!r}"
            f"{did_you_mean(str(run.save_students), SAVE_STUDENTS)}",
        )
    if run.stack != "auto" and (isinstance(run.stack, bool) or not isinstance(run.stack, int) or run.stack < 1):
        raise SpecError(
            file,
            f"{prefix}.stack",
            f'expected a number of students >= 1 (1: each alone) or "auto", got {_short(run.stack)}',
        )
    _positive(file, f"{prefix}.stack", run.stack if isinstance(run.stack, int) else 1, 1, MAX_STACK)
    if run.engine not in ENGINE_NAMES:
        raise SpecError(
            file,
            f"{prefix}.engine",
            f"unknown engine {run.engine!r}"
            f"{did_you_mean(run.engine, ENGINE_NAMES)}; expected one of: {', '.join(ENGINE_NAMES)}",
        )
    if run.gpus_per_job is not None and not 0 <= run.gpus_per_job <= 1:
        raise SpecError(
            file,
            f"{prefix}.gpus_per_job",
            f"expected a share 0 <= value <= 1 (0.5 packs two jobs per GPU), got {run.gpus_per_job}",
        )
    _positive(file, f"{prefix}.worker_wait", run.worker_wait, 0, MAX_SECONDS)
    if run.scheduler and run.engine != "dask":
        raise SpecError(
            file,
            f"{prefix}.scheduler",
            f"a scheduler address is for engine 'dask'; "
            f'expected engine = "dask" or no scheduler, got engine {run.engine!r}',
        )
    _check_precision(run, file, prefix)
    if run.engine == "slurm":
        slurm = run.slurm
        if not (slurm.host or slurm.interface):
            raise SpecError(
                file,
                f"{prefix}.slurm.host",
                "expected the address (or an interface) the scheduler "
                "listens on, reachable from the compute nodes; nothing binds beyond loopback unless named",
            )
        if slurm.gpus not in (0, 1):
            raise SpecError(file, f"{prefix}.slurm.gpus", f"expected 0 or 1 GPU per worker job, got {slurm.gpus}")
        _positive(file, f"{prefix}.slurm.cores", slurm.cores, 1, 10_000)
        _positive(file, f"{prefix}.slurm.max_workers", slurm.max_workers, 1, 10_000)
        if run.gpu_share() > slurm.gpus:
            raise SpecError(
                file,
                f"{prefix}.gpus_per_job",
                f"jobs request {run.gpu_share():g} GPU but worker jobs "
                f"have {slurm.gpus} (run.slurm.gpus); expected gpus_per_job <= {slurm.gpus}",
            )
        at_once = run.slurm_jobs_at_once()
        if run.threads_per_job * at_once > slurm.cores:
            raise SpecError(
                file,
                f"{prefix}.threads_per_job",
                f"a worker job has {slurm.cores} core(s) "
                f"(run.slurm.cores) and runs {at_once} job(s) at once, so {run.threads_per_job} threads per "
                f"job would use more cores than Slurm allocates; expected threads_per_job <= "
                f"{slurm.cores // at_once}, or 0 for that",
            )


def load_sweep(path: str | os.PathLike, sets: tuple[str, ...] = ()) -> Sweep:
    """Read a sweep spec file (with its ``extends`` chain and the command line's ``--set`` values,
    bench.spec.compose) and validate it."""
    return parse_sweep(apply_sets(read_document(path), sets), str(path))


def with_run_overrides(sweep: Sweep, **overrides: Any) -> Sweep:
    """A copy of the sweep with [run] values replaced (from the command line), validated."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if not clean:
        return sweep
    run = dataclasses.replace(sweep.run, **clean)
    check_run(run, "command line", "--run")
    return dataclasses.replace(sweep, run=run)
