"""The TextBrewer side of ``benchmarks/peer_sweep.py``: a whole sweep as a user would script it.

Run in TextBrewer's own virtual environment (never imported by bench; it does not import bench):

    /work/textbrewer-venv/bin/python benchmarks/peer/textbrewer_sweep.py SWEEP.json

SWEEP.json holds ``processes`` and ``threads`` (2 processes of 1 torch thread: bench's 2 slots),
the teachers to fine-tune (pretrained folder, seed, optimizer settings, a torch file of the batches
bench's teacher loop draws for that seed, the folder to save to) and the distillation jobs, each
in ``benchmarks/peer/textbrewer_job.py``'s format. One ``multiprocessing`` pool (fork) of
``processes`` workers runs both phases, each task taken by the next free worker:

  teachers  fine-tune each teacher (transformers' classifier on the pretrained weights, AdamW,
            linear decay, clipping, the given batches: one epoch), score it on dev, and
            ``save_pretrained`` it; a plain torch loop (TextBrewer's ``BasicTrainer`` adds
            checkpoint files of its own and nothing a teacher needs).
  students  every job through ``textbrewer_job.run`` (``BasicDistiller`` for one teacher,
            ``MultiTeacherDistiller`` for more, with the mode the job names), in the order given;
            each worker loads a teacher from disk the first time one of its jobs needs it and
            keeps it for its later jobs (the choice more favourable to TextBrewer than loading
            per job).

Prints one JSON line: the pool's start-up, each phase's wall seconds (from the pool's first task
to its last result), and each teacher's and job's own seconds, start and end times, and accuracy.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch
from textbrewer_job import dev_accuracy, load_teacher, run
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    get_linear_schedule_with_warmup,
)

_LOADED: dict[str, torch.nn.Module] = {}
"""The teachers this worker process has loaded, by folder."""

# imported in the parent, before the fork: no worker pays transformers' lazy import of BERT
assert BertForSequenceClassification


def _init(threads: int) -> None:
    torch.set_num_threads(threads)


def _kept_teacher(path: str) -> torch.nn.Module:
    if path not in _LOADED:
        _LOADED[path] = load_teacher(path)
    return _LOADED[path]


def fine_tune(teacher: dict) -> dict:
    """Fine-tune one teacher on its batches, score it on dev, save it; its seconds and accuracy."""
    started = time.time()
    data = torch.load(teacher["batches"])
    torch.manual_seed(teacher["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(teacher["pretrained"], num_labels=teacher["num_labels"])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=teacher["lr"], weight_decay=teacher["weight_decay"])
    schedule = get_linear_schedule_with_warmup(optimizer, 0, len(data["train"]))
    for batch in data["train"]:
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), teacher["max_grad_norm"])
        optimizer.step()
        schedule.step()
    accuracy = dev_accuracy(model, data["dev"])
    model.save_pretrained(teacher["out"])
    return {"seconds": time.time() - started, "started": started, "finished": time.time(), "accuracy": accuracy}


def distil(job: dict) -> dict:
    """One distillation job (teachers kept by this worker); its seconds, start, end and accuracy."""
    started = time.time()
    got = run(job, load=_kept_teacher)
    return {**got, "k": len(job["teachers"]), "started": started, "finished": time.time(), "pid": os.getpid()}


def main(sweep: dict) -> dict:
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(sweep["processes"], _init, (sweep["threads"],)) as pool:
        t1 = time.perf_counter()
        teachers = pool.map(fine_tune, sweep["teachers"], chunksize=1)
        t2 = time.perf_counter()
        students = list(pool.imap_unordered(distil, sweep["jobs"], chunksize=1))
        t3 = time.perf_counter()
    return {
        "pool_start": t1 - t0,
        "teacher_phase": t2 - t1,
        "student_phase": t3 - t2,
        "teachers": teachers,
        "students": students,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(Path(sys.argv[1]).read_text()))))
