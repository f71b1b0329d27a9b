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
from bench.training.loop import evaluate, precision_scope, warm_up_step
from bench.training.teachers import augmented_outputs_path, load_outputs, run_teacher_outputs, train_teacher

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


def run_distill(job: JobPayload, device: Any, worker_startup: float = 0.0) -> dict:
    """Distil one student and write its record atomically; returns the record. ``worker_startup``:
    the worker's one-off seconds before this job (``timings.worker_startup``, outside ``total``)."""
    import torch

    started = time.perf_counter()
    span = energy.begin(job.energy, device)
    wall_start = time.time()
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
    ctx = DistillContext(
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
    t_setup = time.perf_counter()
    precision = job_precision(config)
    with precision_scope(precision, device):  # every forward pass of the recipe and of the evaluation
        model = METHODS[config["method"]["name"]].run(ctx)
        t_train = time.perf_counter()
        predictions: dict = {}
        scores = evaluate(data, model, device, predictions)
    t_eval = time.perf_counter()
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
            "setup": t_setup - started,
            "train": t_train - t_setup,
            "eval": t_eval - t_train,
            "total": t_eval - started,
            "worker_startup": worker_startup,  # one-off, paid before this job's clock: never in total
        },
        "device": job.device,
        "slot": job.slot,
        "torch_device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "student": None,
        "energy": span.end(),  # over the same interval as timings.total
        "provenance": {**provenance(), "started": wall_start, "finished": time.time()},
    }
    if job.student_path is not None:
        t_save = time.perf_counter()
        record["student"] = save_student(job.student_path, job, model, data, record)
        record["timings"]["save"] = time.perf_counter() - t_save  # outside total: not the student's compute
    return write_record(job.record(), record)


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


RUNNERS = {"teacher": run_teacher, "augment": run_augment, "teacher-outputs": run_outputs, "distill": run_distill}
