"""What a worker does with one job: a teacher fine-tuning or a distillation, ending in a record.

Jobs are self-contained dicts (config + plan coordinates + paths), so a job can run in any
worker process and be rerun from its record alone. Workers keep loaded task data and teacher
logits in memory across jobs.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.plan import stable_hash
from bench.records import atomic_write_json, provenance
from bench.teachers import load_outputs, task_spec, train_spec

_TASKS: dict[str, Any] = {}
_LOGITS: OrderedDict[str, dict] = OrderedDict()
_LOGITS_MAX = 64


def load_task(config: dict, cache_dir: str) -> Any:
    """The job's task data, loaded once per worker."""
    from bench.tasks import TASKS

    key = stable_hash(config["task"])
    if key not in _TASKS:
        spec = task_spec(config)
        _TASKS[key] = TASKS[spec.name].load(spec, Path(cache_dir))
    return _TASKS[key]


def teacher_logits(root: str, task: str, key: str) -> dict[str, np.ndarray]:
    """A teacher's cached logits, kept in a small in-process LRU."""
    if key in _LOGITS:
        _LOGITS.move_to_end(key)
        return _LOGITS[key]
    out = load_outputs(root, task, key)
    _LOGITS[key] = out
    if len(_LOGITS) > _LOGITS_MAX:
        _LOGITS.popitem(last=False)
    return out


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
    fit: dict = field(default_factory=dict)  # the recipe reports steps and seconds here


def run_teacher(job: dict, device: Any) -> dict:
    """Fine-tune and store one teacher."""
    from bench.teachers import train_teacher

    started = time.perf_counter()
    data = load_task(job["config"], job["paths"]["cache"])
    return train_teacher(job, data, device, started)


def run_distill(job: dict, device: Any) -> dict:
    """Distil one student and write its record atomically; returns the record."""
    import torch

    from bench.losses import mean_teacher_logits
    from bench.methods import METHODS
    from bench.models import count_parameters
    from bench.tasks import TASKS
    from bench.training import evaluate

    started = time.perf_counter()
    wall_start = time.time()
    config = job["config"]
    data = load_task(config, job["paths"]["cache"])
    root = job["paths"]["teachers"]
    logits = [teacher_logits(root, data.name, k) for k in config["teachers"]]
    mean = {s: mean_teacher_logits(torch.stack([torch.from_numpy(lg[s]) for lg in logits])).numpy()
            for s in logits[0]}
    ctx = DistillContext(data=data, spec=train_spec(config["student"], config["seed"]), seed=config["seed"],
                         params=config["method"]["params"], teacher_logits=mean,
                         primary_logits=None if config["primary"] is None else
                         teacher_logits(root, data.name, config["primary"]),
                         teacher_keys=tuple(config["teachers"]), primary=config["primary"],
                         teachers_root=root, device=device)
    t_setup = time.perf_counter()
    model = METHODS[config["method"]["name"]].run(ctx)
    t_train = time.perf_counter()
    scores = evaluate(data, model, device)
    t_eval = time.perf_counter()
    metric = TASKS[data.name].metrics[0]
    record = {
        "key": job["key"], "sweep": job["plan"]["sweep"], "status": "ok", "attempts": job["attempt"],
        "error": None, **{k: job["plan"][k] for k in ("k", "combination", "primary", "repeat", "grid")},
        "teacher_keys": config["teachers"], "config": config, "scores": scores, "metric": metric,
        "score": scores["dev"][metric], "n_params": count_parameters(model), "fit": ctx.fit,
        "teacher_work": {"logits": "cached", "features": METHODS[config["method"]["name"]].features},
        "timings": {"queue_wait": job["queue_wait"], "setup": t_setup - started, "train": t_train - t_setup,
                    "eval": t_eval - t_train, "total": t_eval - started},
        "device": job["device"], "slot": job["slot"], "torch_device": str(device),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": torch.get_num_threads(),
        "provenance": {**provenance(), "started": wall_start, "finished": time.time()},
    }
    atomic_write_json(job["record_path"], record)
    return record


RUNNERS = {"teacher": run_teacher, "distill": run_distill}
