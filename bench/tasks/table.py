"""Tasks: data sets, their splits and their metrics. The metric belongs to the task.

- ``digits``: scikit-learn's 8x8 digits (embedded, no download), a fixed stratified 60/20/20
  train/dev/test split.
- ``cifar10``: CIFAR-10 from a local folder (JPEG tarball) or the hub; scored on its test split;
  optional finite sets of crop/flip training views (``bench/tasks/cifar.py``).
- ``lm``: a text corpus for causal LMs, held-out perplexity and LAMBADA (``bench/tasks/lm.py``).
- ``cola`` (Matthews corr.), ``mrpc`` (accuracy and F1), ``sst2`` (accuracy): GLUE, read from a
  folder in the official GLUE TSV layout (``task.data``) or from the Hugging Face hub
  (``nyu-mll/glue``) when no folder is given. Scored on the dev split (GLUE test is unlabeled).

Text is tokenized once per (data, tokenizer, max_length) and cached as flat int arrays; batches
are padded dynamically to their longest sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import SpecError
from bench.core.plugins import Table
from bench.models.builders import MODELS
from bench.tasks.base import TaskData, metric_accuracy, metric_f1, metric_mcc
from bench.tasks.cifar import load_cifar10 as load
from bench.tasks.digits import load_digits
from bench.tasks.glue import check_glue, load_glue
from bench.tasks.lm import evaluate_lm, lm_eval_scores, load_lm, teacher_topk

# --------------------------------------------------------------------------- metrics


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mcc": metric_mcc,
    "accuracy": metric_accuracy,
    "f1": metric_f1,
}


# --------------------------------------------------------------------------- digits


# --------------------------------------------------------------------------- GLUE


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class TaskInfo:
    """A task: its modality, metrics (the first is the headline score) and loader; tasks whose
    models do not map an example to class logits bring their own evaluation and teacher outputs."""

    modality: str
    metrics: tuple
    load: Callable[[Any, Path], TaskData]
    evaluate: Callable[[TaskData, Any, Any], dict] | None = None  # (data, model, device) -> scores
    teacher_outputs: Callable[[Any, TaskData, Any, Any], dict] | None = None  # (model, data, device, spec)
    check: Callable[[Any], None] | None = None  # (task spec) -> raises UserError on bad local data
    other_names: Callable[[dict], dict] | None = None  # scores -> the same under another tool's names
    doc: str = ""  # one line, printed by `bench ls tasks`


# Metrics where lower is better: the worst case of a combination is then its maximum.
LOWER_IS_BETTER = frozenset({"perplexity", "bits_per_byte"})


def _lm_load(spec: Any, cache_dir: Path) -> TaskData:

    return load_lm(spec, cache_dir)


def _lm_evaluate(data: TaskData, model: Any, device: Any) -> dict:

    return evaluate_lm(data, model, device)


def _lm_teacher_outputs(model: Any, data: TaskData, device: Any, spec: Any) -> dict:

    return teacher_topk(model, data, device, spec.teacher_topk)


def load_cifar10(spec: Any, cache_dir: Path) -> TaskData:
    """CIFAR-10 from a local folder or the hub, with its training views (bench/tasks/cifar.py)."""

    return load(spec, cache_dir)


BUILTIN_TASKS: dict[str, TaskInfo] = {
    "digits": TaskInfo("image", ("accuracy",), load_digits, doc="scikit-learn's embedded 8x8 digits (no download)"),
    "cifar10": TaskInfo(
        "image", ("accuracy",), load_cifar10, doc="CIFAR-10 images: task.data folder, or the hub ([hub] extra)"
    ),
    "cola": TaskInfo(
        "text", ("mcc", "accuracy"), load_glue, check=check_glue, doc="GLUE CoLA: grammatical acceptability"
    ),
    "mrpc": TaskInfo("text", ("accuracy", "f1"), load_glue, check=check_glue, doc="GLUE MRPC: paraphrase pairs"),
    "sst2": TaskInfo("text", ("accuracy",), load_glue, check=check_glue, doc="GLUE SST-2: sentiment of sentences"),
    "lm": TaskInfo(
        "lm",
        ("perplexity", "token_accuracy", "accuracy", "bits_per_byte"),
        _lm_load,
        _lm_evaluate,
        _lm_teacher_outputs,
        other_names=lm_eval_scores,
        doc="causal language modelling of a text corpus (task.data: a file or hub:NAME)",
    ),
}
TASKS: Table[TaskInfo] = Table("bench.tasks", TaskInfo, BUILTIN_TASKS)  # + installed plugins (bench.core.plugins)


def check_models(task: Any, teacher: Any, student: Any, file: str) -> None:
    """Both models must take the task's inputs; text tasks need a tokenizer."""
    info = TASKS[task.name]
    for role, spec in (("teacher", teacher), ("student", student)):
        if MODELS[spec.model].modality != info.modality:
            names = [n for n, m in MODELS.items() if m.modality == info.modality]
            raise SpecError(
                file,
                f"{role}.model",
                f"task '{task.name}' takes {info.modality} models ({', '.join(names)}), got '{spec.model}'",
            )
    if info.modality == "text" and task.tokenizer is None:
        raise SpecError(file, "task.tokenizer", "expected a tokenizer name (or a pretrained teacher to take it from)")


def score(task_name: str, labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """All metrics of the task for one split."""
    return {m: METRICS[m](labels, preds) for m in TASKS[task_name].metrics}
