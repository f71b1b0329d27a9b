"""The whole sweep side by side: one ``bench run`` against the same sweep scripted with TextBrewer (issue 29, item 3).

The sweep: N = 4 teachers fine-tuned from the offline MiniLM (alias ``all-minilm-l6-v2``; seeds
42-45, one epoch of 16 steps of 32, lr 5e-5) on SST-2 (``../shared/data/glue``: 512 training
sentences, 256 dev sentences, 64 tokens at most), then one student per k-combination of them,
k = 1..4 (15 students, r = 1): a 2-layer BERT (width 128, random init, seed 100), KD at T = 2,
alpha = 0.5, 3 epochs of batch 32 (48 steps), AdamW lr 1e-3, linear decay, clipping at 1.0. The
task, teacher and student settings are ``benchmarks/peer_textbrewer.py``'s (``spec_text``,
``STUDENT``), with 4 teachers and 2 slots. Both sides use the machine's 2 cores the same way: 2
worker processes of 1 torch thread.

  bench       ``bench run SPEC --quiet --no-report`` in a fresh folder (teachers, results, caches):
              2 slots (``jobs_per_device = 2``) of 1 thread. Whole = the command's wall clock
              (interpreter, workers' start-up, tokenizing, teachers, students). Teacher phase = from
              the first teacher's start to the last one's end (``provenance.started`` / ``finished``
              of the teachers' ``meta.json``: fine-tuning, dev score, the logit cache, files);
              student phase = the same span over the 15 records. The students read the teachers'
              cached logits (each teacher ran once over the data, at teacher time).
  TextBrewer  ``benchmarks/peer/textbrewer_sweep.py`` in TextBrewer's environment: a pool of 2
              processes of 1 thread fine-tunes the 4 teachers (plain torch loop on the batches
              bench's teacher loop draws for each seed: same examples, order, padding, steps and
              lr) and saves them (``save_pretrained``), then runs the 15 jobs with TextBrewer's own
              cache (``is_caching_logits=True``; ``BasicDistiller`` at k = 1, which supports it,
              ``MultiTeacherDistiller`` above), largest k first, each worker taking the next job
              and keeping the teachers it has loaded (both choices favour TextBrewer). Its jobs
              train on bench's first-epoch batches for 3 epochs in TextBrewer's shuffled order (its
              cache holds batches with their logits). Whole = preparing the batches here (loading
              and tokenizing SST-2 into a fresh cache, collating: bench's code, as a user's script
              would have to do it) + the subprocess's wall clock; its phases are timed in the pool
              (first task to last result).

Prints, per run, both sides' teacher phase, student phase and whole wall, the ratios TextBrewer /
bench of the student phase and the whole sweep, and the mean dev accuracy of each side's
students and teachers (a check that both trained, not a comparison). ``--runs 2`` runs the sides
in the other order the second time.

    .venv/bin/python benchmarks/peer_sweep.py [--runs 1] [--peer-python /work/textbrewer-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from peer_textbrewer import REPO, peer_batches, peer_job, spec_text

TEACHERS, EPOCHS, SLOTS = 4, 3, 2
NAME = "peer-sweep"
PEER_SWEEP = REPO / "benchmarks" / "peer" / "textbrewer_sweep.py"


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = folder / f"{NAME}.toml"
    spec.write_text(spec_text(EPOCHS, teachers=TEACHERS, name=NAME, slots=SLOTS))
    return spec


def _span(entries: list[dict]) -> float:
    """Wall seconds from the first start to the last end of ``entries`` (each with started, finished)."""
    return max(e["finished"] for e in entries) - min(e["started"] for e in entries)


def bench_side(folder: Path) -> dict:
    """One ``bench run`` of the sweep from an empty folder; its wall, phases and scores."""
    spec = _fresh(folder)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(spec), "--quiet", "--no-report"], cwd=folder, check=True
    )
    wall = time.perf_counter() - t0
    teachers = [json.loads(p.read_text()) for p in sorted((folder / "teachers").glob("*/*/meta.json"))]
    records = [json.loads(p.read_text()) for p in sorted((folder / "results" / NAME / "records").glob("*.json"))]
    assert len(teachers) == TEACHERS and len(records) == 2**TEACHERS - 1, (len(teachers), len(records))
    assert all(r["status"] == "ok" for r in records)
    return {
        "whole": wall,
        "teacher_phase": _span([t["provenance"] for t in teachers]),
        "student_phase": _span([r["provenance"] for r in records]),
        "teacher_seconds": sum(t["timings"]["total"] for t in teachers),
        "student_seconds": sum(r["timings"]["total"] for r in records),
        "teacher_acc": statistics.mean(t["score"] for t in teachers),
        "student_acc": statistics.mean(r["score"] for r in records),
    }


def textbrewer_side(folder: Path, peer_python: str) -> dict:
    """The same sweep scripted with TextBrewer from an empty folder; its wall, phases and scores."""
    from bench.core.config import task_spec, train_spec  # lazy: bench's data code prepares TextBrewer's batches
    from bench.models.builders import resolve_pretrained
    from bench.plan.jobs import make_plan
    from bench.spec.load import load_sweep
    from bench.tasks.table import TASKS

    spec = _fresh(folder)
    t0 = time.perf_counter()
    plan = make_plan(load_sweep(spec))
    task = task_spec(plan.jobs[0].config)
    data = TASKS[task.name].load(task, folder / ".cache")  # tokenized anew: not the in-process cache of runners
    teachers = []
    for t in plan.teachers:
        tspec = train_spec(t.config["model"], t.seed)
        batches = folder / f"teacher-{t.index}.pt"
        torch.save(peer_batches(data, tspec, t.seed), batches)
        teachers.append(
            {
                "pretrained": resolve_pretrained(tspec.pretrained),
                "num_labels": data.shape.num_labels,
                "seed": t.seed,
                "lr": tspec.lr,
                "weight_decay": tspec.weight_decay,
                "max_grad_norm": tspec.max_grad_norm,
                "batches": str(batches),
                "out": str(folder / "tb-teachers" / str(t.index)),
            }
        )
    jobs = [
        peer_job(folder, j, data, j.config["seed"], "cached", [teachers[i]["out"] for i in j.combination])
        for j in sorted(plan.jobs, key=lambda j: -j.k)  # largest first: the shortest finish of 2 workers
    ]
    sweep = folder / "sweep.json"
    sweep.write_text(json.dumps({"processes": SLOTS, "threads": 1, "teachers": teachers, "jobs": jobs}))
    prep = time.perf_counter() - t0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [peer_python, str(PEER_SWEEP), str(sweep)], capture_output=True, text=True, check=True, env=env
    )
    wall = time.perf_counter() - t0
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(got["students"]) == 2**TEACHERS - 1
    return {
        "whole": wall,
        "prep": prep,
        "pool_start": got["pool_start"],
        "teacher_phase": got["teacher_phase"],
        "student_phase": got["student_phase"],
        "teacher_seconds": sum(t["seconds"] for t in got["teachers"]),
        "student_seconds": sum(s["total"] for s in got["students"]),
        "teacher_acc": statistics.mean(t["accuracy"] for t in got["teachers"]),
        "student_acc": statistics.mean(s["accuracy"] for s in got["students"]),
        "by_k": {
            k: statistics.mean(s["total"] for s in got["students"] if s["k"] == k) for k in range(1, TEACHERS + 1)
        },
    }


def _line(name: str, side: dict) -> str:
    extra = f", batches prepared {side['prep']:.1f} s, pool start {side['pool_start']:.1f} s" if "prep" in side else ""
    return (
        f"  {name}: teacher phase {side['teacher_phase']:.1f} s (teachers' own {side['teacher_seconds']:.1f} s), "
        f"student phase {side['student_phase']:.1f} s (jobs' own {side['student_seconds']:.1f} s), "
        f"whole {side['whole']:.1f} s{extra}; mean dev accuracy students {side['student_acc']:.3f}, "
        f"teachers {side['teacher_acc']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1, help="runs; the second runs TextBrewer first, and so on")
    ap.add_argument("--peer-python", default="/work/textbrewer-venv/bin/python")
    ap.add_argument("--workdir", default="/tmp/bench-peer-sweep", help="emptied at each run")
    args = ap.parse_args()
    root = Path(args.workdir)
    print(
        f"SST-2 512/256, {TEACHERS} MiniLM teachers (1 epoch), {2**TEACHERS - 1} students k=1..{TEACHERS} "
        f"(2-layer BERT, KD, {EPOCHS} epochs), {SLOTS} processes of 1 thread each side",
        flush=True,
    )
    ratios = []
    for n in range(args.runs):
        load = os.getloadavg()[0]
        order = ("bench", "textbrewer") if n % 2 == 0 else ("textbrewer", "bench")
        got = {}
        for side in order:
            got[side] = (
                bench_side(root / "bench")
                if side == "bench"
                else textbrewer_side(root / "textbrewer", args.peer_python)
            )
        b, t = got["bench"], got["textbrewer"]
        ratios.append((t["student_phase"] / b["student_phase"], t["whole"] / b["whole"]))
        print(f"run {n + 1} ({' then '.join(order)}), load 1 min {load:.2f} -> {os.getloadavg()[0]:.2f}:")
        print(_line("bench", b))
        print(_line("TextBrewer", t))
        print("  TextBrewer mean job seconds by k: " + ", ".join(f"k={k} {s:.2f}" for k, s in t["by_k"].items()))
        print(f"  TextBrewer / bench: student phase {ratios[-1][0]:.2f}, whole sweep {ratios[-1][1]:.2f}", flush=True)
    print(json.dumps({"ratios": ratios}))


if __name__ == "__main__":
    main()
