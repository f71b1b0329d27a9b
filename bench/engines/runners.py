"""What a worker does with one job: a teacher fine-tuning or a distillation, ending in a record.

Jobs are self-contained dicts (config + plan coordinates + paths), so a job can run in any
worker process and be rerun from its record alone. Workers keep loaded task data and teacher
logits in memory across jobs.

One-off costs are not a job's: before the first job of a task, the worker warms up (``warm_up``:
the task's data and caches, its metrics' and its model family's libraries) off every job's clock,
and the record carries that, with the worker's start-up when it is the worker's first job, as
``timings.worker_startup``, outside ``total`` (docs/performance.md, "Accounting").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from bench.core import energy
from bench.core.config import job_precision, task_spec, train_spec
from bench.core.contracts import JobPayload
from bench.core.hashing import stable_hash
from bench.core.numerics import NUMERICS_VERSION
from bench.core.provenance import provenance
from bench.core.records import encode_array, write_record
from bench.methods.context import DistillContext
from bench.methods.table import METHODS
from bench.models.builders import MODELS, count_parameters
from bench.models.losses import mean_teacher_logits
from bench.tasks.glue import concat_splits, text_split
from bench.tasks.table import TASKS, score
from bench.training.augment import augmented_path, load_augmented
from bench.training.augment import run_augment as augment_job
from bench.training.export import model_card, model_description, save_model_folder, wrapped_hf
from bench.training.loop import Diverged, evaluate, precision_scope, warm_up_step
from bench.training.teachers import (
    augmented_outputs_path,
    build_teacher,
    load_outputs,
    run_teacher_outputs,
    train_teacher,
    train_teachers_stacked,
)

log = logging.getLogger(__name__)
_TASKS: dict[str, Any] = {}
_WARM: set[str] = set()  # (task, model) pairs this worker has warmed up for
_LOGITS: OrderedDict[str, dict] = OrderedDict()
_LOGITS_MAX_BYTES = 4 << 30  # teacher logits per (example, view) can be hundreds of MB per teacher


def load_task(config: dict, cache_dir: str) -> Any:
    """The job's task data, loaded once per worker."""

    key = stable_hash(config["task"])
    if key not in _TASKS:
        spec = task_spec(config)
        _TASKS[key] = TASKS[spec.name].load(spec, Path(cache_dir))
    return _TASKS[key]


MODEL_OF = {"teacher": "model", "distill": "student"}  # the config entry naming the model a job trains


def warm_up(job: JobPayload, device: Any) -> float:
    """Pay, once per worker and (task, model), what the first job of a task would otherwise pay
    and later jobs reuse: the task's data and caches (``load_task``), the libraries of its metrics
    (scored on two labels) and of the job's model family, and a process's first training step (a
    model built once, given one step on two examples on ``device`` and dropped:
    ``training.loop.warm_up_step``; transformers, pretrained files into the page cache, kernel and
    optimizer set-up). Returns the seconds spent, 0.0 when the worker was warm. Augmentation jobs
    read no task data and need none. Every recipe seeds before it builds, so the model built here
    changes no result."""
    if job.kind == "stack":  # its members share task and student model: warm up as its first
        return warm_up(job.members[0], device)
    config = job.config
    if job.kind not in (*MODEL_OF, "teacher-outputs"):
        return 0.0
    model = config.get(MODEL_OF.get(job.kind, ""))
    key = stable_hash([config["task"], model])
    if key in _WARM:
        return 0.0
    start = time.perf_counter()
    data = load_task(config, job.paths.cache)
    if TASKS[data.name].evaluate is None:  # the generic evaluation scores classes with the task's metrics
        score(data.name, np.array([0, 1]), np.array([0, 1]))
    if model is not None:
        spec = train_spec(model, config["seed"])
        warm_up_step(MODELS[spec.model].build(spec, data.shape), data.splits["train"], spec, device)
    _WARM.add(key)
    return time.perf_counter() - start


def teacher_logits(root: str, task: str, key: str, augment: str | None = None) -> dict[str, np.ndarray]:
    """A teacher's cached logits (train followed by an augmented set's, if any), kept in an
    in-process LRU bounded in bytes."""

    cache_key = f"{key}/{augment}"
    if cache_key in _LOGITS:
        _LOGITS.move_to_end(cache_key)
        return _LOGITS[cache_key]
    out = load_outputs(root, task, key)
    if augment is not None:
        aug = load_augmented(augmented_outputs_path(root, task, key, augment))
        out = {**out, "train": np.concatenate([out["train"], aug["train"]])}
    _LOGITS[cache_key] = out
    while len(_LOGITS) > 1 and sum(a.nbytes for v in _LOGITS.values() for a in v.values()) > _LOGITS_MAX_BYTES:
        _LOGITS.popitem(last=False)
    return out


def with_augmented_train(config: dict, data: Any, cache: str, augment: str) -> Any:
    """The task data whose train split is followed by augmentation run ``augment`` (kept per worker)."""
    import dataclasses

    key = f"{stable_hash(config['task'])}/{augment}"
    if key not in _TASKS:
        aug = text_split(load_augmented(augmented_path(cache, data.name, augment)))
        _TASKS[key] = dataclasses.replace(
            data, splits={**data.splits, "train": concat_splits(data.splits["train"], aug)}
        )
    return _TASKS[key]


def run_augment(job: JobPayload, device: Any, worker_startup: float = 0.0) -> dict:
    """Augment the training texts (bench.training.augment)."""

    return augment_job(job, device)


def run_outputs(job: JobPayload, device: Any, worker_startup: float = 0.0) -> dict:
    """Cache a teacher's logits on an augmented set."""

    return run_teacher_outputs(job, load_task(job.config, job.paths.cache), device)


def run_teacher(job: JobPayload, device: Any, worker_startup: float = 0.0) -> dict:
    """Fine-tune and store one teacher; ``worker_startup``: the worker's one-off seconds before it
    (its meta's ``timings.worker_startup``, outside ``total``)."""

    started = time.perf_counter()
    span = energy.begin(job.energy, device)
    data = load_task(job.config, job.paths.cache)
    return train_teacher(job, data, device, started, span, worker_startup)


def distill_context(job: JobPayload, device: Any) -> DistillContext:
    """What a distillation job's recipe receives: the task data (with its augmented examples, if
    any) and its teachers' cached logits, averaged once per split."""
    import torch

    config = job.config
    data = load_task(config, job.paths.cache)
    augment = config.get("augment")
    if augment is not None:
        data = with_augmented_train(config, data, job.paths.cache, augment)
    root = job.paths.teachers
    logits = [teacher_logits(root, data.name, k, augment) for k in config["teachers"]]
    mean = {
        s: mean_teacher_logits(torch.stack([torch.from_numpy(lg[s]) for lg in logits])).numpy()
        for s in logits[0]
        if s in data.splits
    }  # dense per-split logits (not the LM's top-K caches)
    return DistillContext(
        data=data,
        spec=train_spec(config["student"], config["seed"]),
        seed=config["seed"],
        params={**METHODS[config["method"]["name"]].defaults(), **config["method"]["params"]},  # keys omit defaults
        teacher_logits=mean,
        primary_logits=None
        if config["primary"] is None
        else teacher_logits(root, data.name, config["primary"], augment),
        teacher_keys=tuple(config["teachers"]),
        primary=config["primary"],
        teachers_root=root,
        device=device,
        teacher_outputs=tuple(logits),
    )


def run_distill(job: JobPayload, device: Any, worker_startup: float = 0.0) -> dict:
    """Distil one student and write its record atomically; returns the record. ``worker_startup``:
    the worker's one-off seconds before this job (``timings.worker_startup``, outside ``total``)."""
    started = time.perf_counter()
    span = energy.begin(job.energy, device)
    wall_start = time.time()
    ctx = distill_context(job, device)
    t_setup = time.perf_counter()
    with precision_scope(job_precision(job.config), device):  # every forward pass of the recipe and of the evaluation
        model = METHODS[job.config["method"]["name"]].run(ctx)
    t_train = time.perf_counter()
    timings = {"setup": t_setup - started, "train": t_train - t_setup}
    return finish_distill(job, ctx, model, timings, wall_start, span, worker_startup=worker_startup)


def finish_distill(
    job: JobPayload,
    ctx: DistillContext,
    model: Any,
    timings: dict,
    wall_start: float,
    span: energy.Span,
    before: dict | None = None,
    worker_startup: float = 0.0,
    **extra,
) -> dict:
    """Evaluate a trained student, write its record (with ``extra`` fields) and save it if asked;
    returns the record. ``timings`` holds its setup and train seconds; eval and total are added.
    Its energy is ``span``'s to the end of the evaluation, plus ``before`` when given (a stacked
    job: its setup and its share of the stack's training, ``energy.combine``)."""
    import torch

    config, data = job.config, ctx.data
    augment = config.get("augment")
    precision = job_precision(config)
    t_eval0 = time.perf_counter()
    with precision_scope(precision, ctx.device):
        predictions: dict = {}
        scores = evaluate(data, model, ctx.device, predictions)
    t_eval = time.perf_counter() - t_eval0
    info = TASKS[data.name]
    metric = info.metrics[0]
    record = {
        "key": job.key,
        "sweep": job.plan["sweep"],
        "status": "ok",
        "attempts": job.attempt,
        "error": None,
        **{k: job.plan[k] for k in ("k", "combination", "primary", "repeat", "grid")},
        "teacher_keys": config["teachers"],
        "config": config,
        "precision": precision,
        "numerics": NUMERICS_VERSION,
        "paths": dataclasses.asdict(job.paths),
        "scores": scores,
        "metric": metric,
        "score": scores[data.eval_splits[0]][metric],
        **({"other_names": info.other_names(scores)} if info.other_names else {}),
        "score_split": data.eval_splits[0],
        "n_params": count_parameters(model),
        "fit": ctx.fit,
        "predictions": {split: encode_array(p) for split, p in predictions.items()},
        "teacher_work": {
            "logits": "cached"
            + (" (augmented examples included)" if augment else "")
            + (" per (example, training view)" if data.splits["train"].n_views else ""),
            "features": METHODS[config["method"]["name"]].features,
            **ctx.teacher_work,
        },
        "timings": {
            "queue_wait": job.queue_wait,
            **timings,
            "eval": t_eval,
            "total": timings["setup"] + timings["train"] + t_eval,
            "worker_startup": worker_startup,  # one-off, paid before this job's clock: never in total
        },
        "device": job.device,
        "slot": job.slot,
        "torch_device": str(ctx.device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "student": None,
        "energy": span.end() if before is None else energy.combine([(before, 1.0), (span.end(), 1.0)]),
        **extra,
        "provenance": {**provenance(), "started": wall_start, "finished": time.time()},
    }
    if job.student_path is not None:
        t_save = time.perf_counter()
        record["student"] = save_student(job.student_path, job, model, data, record)
        record["timings"]["save"] = time.perf_counter() - t_save  # outside total: not the student's compute
    return write_record(job.record(), record)


def run_stack(job: JobPayload, device: Any, worker_startup: float = 0.0) -> dict:
    """Train a stack's jobs (``job.members``: distillation jobs, or teachers) as one batched model
    (``training.stack.train_stacked``), then evaluate each and write its record (a teacher: its
    folder, as ``train_teacher`` stores it). Returns ``{"members": {key: record | meta |
    exception}}``: a member that diverged (``Diverged``) or whose evaluation raised fails alone.
    With ``run.stack = "auto"`` (``job.plan["stack"]``) the members are trained in chunks that fit
    the device's memory (``training.stack.auto_size``). Members that cannot be stacked
    (``training.stack.stack_problem``) run one after the other, alone."""
    from bench.training.stack import stack_problem  # lazy: torch.func, workers only

    wall_start = time.time()
    teachers = job.members[0].kind == "teacher"
    setups = []  # (member, ctx or task data, model, loss or spec, setup seconds, setup energy)
    for member in job.members:
        t0 = time.perf_counter()
        span = energy.begin(member.energy, device)
        if teachers:
            data = load_task(member.config, member.paths.cache)
            setups.append((member, data, *build_teacher(member, data), time.perf_counter() - t0, span.end()))
            continue
        ctx = distill_context(member, device)
        model, loss = METHODS[member.config["method"]["name"]].stack_setup(ctx)  # type: ignore[misc]
        setups.append((member, ctx, model, loss, time.perf_counter() - t0, span.end()))
    first = setups[0]
    data = first[1] if teachers else first[1].data
    split = data.splits["train"]
    problem = stack_problem(first[2], split, job_precision(first[0].config))
    if problem is not None:
        log.info(f"stack {job.key}: {len(setups)} jobs run alone: {problem}")
        return {"members": {member.key: _alone(member, device) for member, *_ in setups}}
    outcomes: dict[str, Any] = {}
    chunks = _chunks(setups, _stack_size(job, setups, split, device, teachers))
    for chunk in chunks:
        startup = worker_startup if chunk is chunks[0] else 0.0
        if teachers:
            built = [(member, model, spec, t, e) for member, _, model, spec, t, e in chunk]
            outcomes.update(train_teachers_stacked(built, data, device, wall_start, startup))
        else:
            _train_chunk(chunk, device, wall_start, outcomes, startup)
    return {"members": outcomes}


def _stack_size(job: JobPayload, setups: list, split: Any, device: Any, teachers: bool) -> int:
    """How many of a stack's members train at once: all, or with ``run.stack = "auto"`` as many as
    fit the device's memory (``training.stack.auto_size``)."""
    from bench.training.stack import auto_size, student_bytes  # lazy: torch.func, workers only

    if job.plan.get("stack") != "auto":
        return len(setups)
    _, first, model, loss_or_spec, *_ = setups[0]
    targets = 0 if teachers else sum(t.numel() * t.element_size() for t in loss_or_spec.targets)
    batch_size = loss_or_spec.batch_size if teachers else first.spec.batch_size
    return auto_size(student_bytes(model, split, batch_size, targets), device)


def _chunks(items: list, size: int) -> list[list]:
    """``items`` in as few chunks of at most ``size`` as can hold them, dealt round-robin."""
    count = -(-len(items) // size)
    return [items[i::count] for i in range(count)]


def _alone(member: JobPayload, device: Any) -> Any:
    """A member run alone: its record (a teacher: its meta), or the exception it raised."""
    try:
        return RUNNERS[member.kind](member, device)
    except Exception as e:
        return e


def _train_chunk(chunk: list, device: Any, wall_start: float, outcomes: dict, worker_startup: float) -> None:
    """Train one stack of (member, ctx, model, loss, setup seconds, setup energy) together, then
    finish each member alone: its record, or the exception that ends it (``Diverged`` at its
    first non-finite loss), in ``outcomes``. The worker's one-off ``worker_startup`` goes to the
    chunk's first member's record; each member is charged its own setup and evaluation and an
    equal share of the stack's training, in seconds and in energy."""
    from bench.training.stack import train_stacked  # lazy: torch.func, workers only

    members, contexts, models, losses, setup, setup_energy = zip(*chunk)
    train_span = energy.begin(members[0].energy, device)
    fits = train_stacked(
        list(models),
        contexts[0].data.splits["train"],
        contexts[0].spec,
        [c.seed for c in contexts],
        list(losses),
        device,
    )
    train_seconds = sum(f["seconds"] for f in fits)
    train_energy = train_span.end()
    for i, (member, ctx, model, fit) in enumerate(zip(members, contexts, models, fits)):
        if fit["diverged_at"] is not None:
            outcomes[member.key] = Diverged(fit["diverged_at"])
            continue
        ctx.fit.update(steps=fit["steps"], seconds=fit["seconds"])
        stack = {"size": len(chunk), "index": i, "train_seconds": train_seconds}
        try:
            outcomes[member.key] = finish_distill(
                member,
                ctx,
                model,
                {"setup": setup[i], "train": fit["seconds"]},
                wall_start,
                energy.begin(member.energy, device),
                before=energy.combine([(setup_energy[i], 1.0), (train_energy, 1.0 / len(chunk))]),
                worker_startup=worker_startup if i == 0 else 0.0,
                stack=stack,
            )
        except Exception as e:
            outcomes[member.key] = e


def save_student(folder: str, job: JobPayload, model: Any, data: Any, record: dict) -> dict:
    """Save a distilled student into ``folder`` (its payload's ``student_path``, from
    ``run.save_students``): a transformers folder with the task's tokenizer and a model card, or
    a state dict with ``model.json``; returns the record's ``student`` entry (path and format)."""
    config = job.config
    facts = {
        "task": data.name,
        "sweep": job.plan["sweep"],
        "job key": job.key,
        "method": f"{config['method']['name']} {json.dumps(config['method']['params'], sort_keys=True)}",
        "teachers (k)": f"{job.plan['k']}: indices {job.plan['combination']}, keys {config['teachers']}",
        "primary teacher": job.plan["primary"],
        "repeat": job.plan["repeat"],
        "grid point": json.dumps(job.plan["grid"], sort_keys=True),
        "seed": config["seed"],
        "training seconds": f"{record['timings']['train']:.1f}",
    }
    hf = wrapped_hf(model)
    card = "" if hf is None else model_card(f"bench student {job.key}", facts, record["scores"], hf)
    description = {} if hf is not None else model_description(config["student"], config["seed"], data.shape, facts)
    path = str(Path(folder).resolve())
    kind = save_model_folder(path, model.cpu(), data.tokenizer, card, description)
    return {"path": path, "format": kind}


RUNNERS = {
    "teacher": run_teacher,
    "augment": run_augment,
    "teacher-outputs": run_outputs,
    "distill": run_distill,
    "stack": run_stack,
}
