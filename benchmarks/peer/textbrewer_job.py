"""One distillation job with TextBrewer, run in TextBrewer's own virtual environment.

Called by ``benchmarks/peer_textbrewer.py`` (never imported by bench; it does not import bench):

    /work/textbrewer-venv/bin/python benchmarks/peer/textbrewer_job.py JOB.json

JOB.json names the teachers' transformers folders (bench's ``teachers/<task>/<key>/hf/``), the
student's BertConfig fields and seed, the training settings, and a torch file of the exact batches
bench's job trains and evaluates on (same examples, order, padding), the number of epochs they
span and a mode. k = 1 runs TextBrewer's ``BasicDistiller``, k > 1 its ``MultiTeacherDistiller``
(their logits are averaged: the target bench caches).

  default  ``train(num_steps=...)`` over all of bench's batches: the k teachers run forward on
           every batch of every epoch.
  cached   ``DistillationConfig(is_caching_logits=True)``, which TextBrewer allows only with
           ``train(num_epochs=...)``: the distiller runs the teachers once over the first epoch's
           batches, keeps those batches and logits in memory, and each epoch trains on that list
           after ``random.shuffle`` (Python's generator, seeded with the job's seed). So the
           batches are bench's first-epoch batches, in TextBrewer's order, every epoch; the cache
           lives in the distiller and dies with the job. The loss is bench's KD,
alpha * CE + (1 - alpha) * T^2 * soft-CE(mean teacher, student); soft-CE and bench's KL differ by
the teacher's entropy, a constant, so the gradients are the same.

Prints one JSON line: seconds of the job (load teachers, build the student, train, evaluate:
what bench's job wall covers, minus collating batches, which bench does inside its job),
seconds of training alone, steps, and the dev accuracy.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from textbrewer import BasicDistiller, DistillationConfig, MultiTeacherDistiller, TrainingConfig
from transformers import AutoModelForSequenceClassification, BertConfig, get_linear_schedule_with_warmup


def _teacher_adaptor(batch: dict, out: object) -> dict:
    """TextBrewer's view of a teacher's output: its logits."""
    return {"logits": out.logits}  # type: ignore[attr-defined]


def _student_adaptor(batch: dict, out: object) -> dict:
    """TextBrewer's view of the student's output: logits and the hard-label loss (labels are in the batch)."""
    return {"logits": out.logits, "losses": out.loss}  # type: ignore[attr-defined]


def dev_accuracy(model: torch.nn.Module, batches: list[dict]) -> float:
    """Dev accuracy of ``model`` on ``batches`` (bench's evaluation batches, 256 examples each)."""
    model.eval()
    right = total = 0
    with torch.no_grad():
        for b in batches:
            labels = b["labels"]
            logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits
            right += int((logits.argmax(-1) == labels).sum())
            total += len(labels)
    return right / total


def load_teacher(path: str) -> torch.nn.Module:
    """A teacher from its transformers folder, in eval mode."""
    return AutoModelForSequenceClassification.from_pretrained(path).eval()


def run(job: dict, load: Callable[[str], torch.nn.Module] = load_teacher) -> dict:
    """Distil the student of ``job`` with TextBrewer; the timings and the accuracy. ``load`` gives
    a teacher from its folder (``benchmarks/peer/textbrewer_sweep.py`` passes one that keeps the
    teachers a process has loaded)."""
    torch.set_num_threads(job["threads"])
    started = time.perf_counter()
    data = torch.load(job["batches"])
    teachers = [load(p) for p in job["teachers"]]
    torch.manual_seed(job["seed"])
    student = AutoModelForSequenceClassification.from_config(BertConfig(**job["student_config"]))
    if job["freeze_embeddings"]:
        for p in student.base_model.embeddings.parameters():
            p.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=job["lr"], weight_decay=job["weight_decay"])
    steps, cached = len(data["train"]), job["mode"] == "cached"
    t, alpha = job["temperature"], job["alpha"]
    distill = DistillationConfig(
        temperature=t,
        kd_loss_type="ce",
        kd_loss_weight=(1 - alpha) * t * t,
        hard_label_weight=alpha,
        is_caching_logits=cached,
    )
    random.seed(job["seed"])  # the cache's per-epoch shuffle
    schedule = {"num_warmup_steps": 0, "num_training_steps": steps}
    with tempfile.TemporaryDirectory(prefix="textbrewer-") as out:
        train_config = TrainingConfig(device="cpu", output_dir=out, ckpt_steps=steps, log_dir=None)
        if len(teachers) == 1:
            distiller = BasicDistiller(train_config, distill, teachers[0], student, _teacher_adaptor, _student_adaptor)
        else:
            distiller = MultiTeacherDistiller(
                train_config, distill, teachers, student, _teacher_adaptor, _student_adaptor
            )
        t_train = time.perf_counter()
        with distiller:
            if cached:  # bench's epochs have equally many batches: the first epoch's are the first steps / epochs
                distiller.train(
                    optimizer,
                    data["train"][: steps // job["epochs"]],
                    num_epochs=job["epochs"],
                    scheduler_class=get_linear_schedule_with_warmup,
                    scheduler_args=schedule,
                    max_grad_norm=job["max_grad_norm"],
                )
            else:
                distiller.train(
                    optimizer,
                    data["train"],
                    num_steps=steps,
                    scheduler_class=get_linear_schedule_with_warmup,
                    scheduler_args=schedule,
                    max_grad_norm=job["max_grad_norm"],
                )
        t_eval = time.perf_counter()
        accuracy = dev_accuracy(student, data["dev"])
    done = time.perf_counter()
    return {"total": done - started, "train": t_eval - t_train, "steps": steps, "accuracy": accuracy}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
