"""Honest accounting: a worker's one-off start-up and warm-up are recorded apart from the job they
precede (``timings.worker_startup``, outside ``total``); the progress bar's ETA comes from measured
per-phase job times; `bench plan` imports neither torch nor transformers."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import GLUE, REPO

from bench.driver.progress import estimate_eta, format_eta
from bench.driver.run import teacher_payload
from bench.engines.queue import Worker, make_slots, run_job
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.training.teachers import load_meta

TEXT_SPEC = """
name = "accounting"
teachers = 2
k = [1]
[task]
name = "cola"
data = "{glue}"
tokenizer = "all-minilm-l6-v2"
max_length = 16
train_subset = 32
eval_subset = 16
[teacher]
model = "bert"
params = {{ num_hidden_layers = 1, hidden_size = 16, num_attention_heads = 1, intermediate_size = 16 }}
epochs = 1
batch_size = 16
[student]
model = "bert"
params = {{ num_hidden_layers = 1, hidden_size = 8, num_attention_heads = 1, intermediate_size = 8 }}
epochs = 1
batch_size = 16
seed = 50
[method]
name = "kd"
"""

needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present")


def _text_plan(folder: Path):
    spec = folder / "accounting.toml"
    spec.write_text(TEXT_SPEC.format(glue=GLUE))
    return make_plan(load_sweep(spec))


@needs_glue
def test_first_teacher_of_a_worker_is_not_charged_its_start_up(project):
    """Two identical tiny BERT teachers (two seeds) through one worker process: the first carries
    the worker's start-up and warm-up (torch, transformers, the tokenizer, the metrics' library)
    in ``worker_startup`` and not in ``total``; the second carries none."""
    plan = _text_plan(project)
    worker = Worker(make_slots(("cpu",), 1, 1)[0], project / "worker.log")
    worker.start()
    try:
        replies = [
            run_job(worker, teacher_payload(plan, t).dispatched(1, "cpu#0", "cpu", 0.0), None) for t in plan.teachers
        ]
    finally:
        worker.stop()
    assert [r["status"] for r in replies] == ["ok", "ok"], replies
    first, second = (load_meta(plan.sweep.paths.teachers, "cola", t.key)["timings"] for t in plan.teachers)
    assert first["worker_startup"] > 0 and second["worker_startup"] == 0
    assert replies[0]["worker_startup"] == first["worker_startup"] and replies[1]["worker_startup"] == 0
    for t in (first, second):  # total is the job's stages, nothing else
        parts = t["setup"] + t["train"] + t["eval"] + t["cache"]
        assert parts <= t["total"] <= parts + 0.5 * (t["total"] + 1e-3) + 1.0
    # identical jobs cost about the same; had the one-off been charged, the first would exceed the
    # second by the whole start-up, which is compared here, not a wall-clock threshold
    assert first["total"] <= 3 * second["total"] + 0.25 * first["worker_startup"]
    assert replies[0]["seconds"] <= 3 * replies[1]["seconds"] + 0.25 * first["worker_startup"]


WARM_SCRIPT = """
import json, sys
import torch
from bench.driver.run import teacher_payload
from bench.engines.runners import run_teacher, warm_up
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

plan = make_plan(load_sweep(sys.argv[1]))
job = teacher_payload(plan, plan.teachers[0]).dispatched(1, "cpu#0", "cpu", 0.0)
heavy = ("transformers", "tokenizers", "sklearn", "scipy", "huggingface_hub", "safetensors")
before_warm = {m for m in sys.modules if m.split(".")[0] in heavy}
cpu = torch.device("cpu")
spent = warm_up(job, cpu)
before = set(sys.modules)
run_teacher(job, cpu, spent)
new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in heavy)
print(json.dumps({"cold": sorted(before_warm), "spent": spent, "again": warm_up(job, cpu), "imported_by_job": new}))
"""


@needs_glue
def test_after_the_warm_up_a_job_imports_no_library(project):
    """What the first job of a task used to pay (transformers at the model build, scikit-learn at
    the first MCC, the tokenizer) is paid by ``warm_up``: the job itself imports none of them, in a
    fresh interpreter (machine-speed independent), and a second warm-up costs nothing."""
    plan = _text_plan(project)
    script = project / "warm.py"
    script.write_text(textwrap.dedent(WARM_SCRIPT))
    out = subprocess.run(
        [sys.executable, str(script), str(project / "accounting.toml")],
        capture_output=True,
        text=True,
        cwd=project,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(m.startswith(("transformers", "sklearn")) for m in got["cold"])  # the check below means something
    assert got["spent"] > 0 and got["again"] == 0.0
    assert got["imported_by_job"] == []
    assert plan.teachers


def _phases(**kinds):
    return {kind: {"left": left, "seconds": seconds} for kind, (left, seconds) in kinds.items()}


def test_eta_from_measured_phase_times():
    """Per kind: jobs left x mean measured seconds, shared by the slots; unknown while a kind with
    work left has no measurement (a teacher says nothing of a student)."""
    # 2 teachers left at 30 s, 10 students left at 2 s, on 2 slots: (60 + 20) / 2
    assert estimate_eta(_phases(teacher=(2, [20.0, 40.0]), distill=(10, [1.0, 3.0])), 2) == 40.0
    # the first teacher finished, no student yet: no guess (tqdm's rate would give 17 x the teacher)
    assert estimate_eta(_phases(teacher=(2, [30.0]), distill=(14, [])), 2) is None
    # teachers all done: only the students' measured time counts, the teachers' long one not at all
    assert estimate_eta(_phases(teacher=(0, [600.0]), distill=(4, [0.5, 1.5])), 1) == 4.0
    assert estimate_eta(_phases(teacher=(0, [1.0]), distill=(0, [1.0])), 2) == 0.0
    assert estimate_eta({}, 0) == 0.0
    assert [format_eta(s) for s in (None, 12.4, 245, 3720)] == ["?", "12s", "4m05s", "1h02m"]


def test_scheduler_counts_measure_each_phase():
    """The scheduler hands the progress hook per kind what is left and the measured seconds."""
    from bench.core.contracts import JobPaths, JobPayload
    from bench.engines.queue import Item, Scheduler

    def item(key, kind, deps=(), seconds=None):
        payload = JobPayload(
            kind=kind, key=key, config={}, paths=JobPaths("t", "c"), threads=1, deterministic=False, plan={}
        )
        return Item(key=key, kind=kind, payload=payload, deps=deps, seconds=seconds)

    seen = []
    items = [item("t0", "teacher", seconds=30.0), item("s0", "distill", ("t0",)), item("s1", "distill", ("t0",))]
    sched = Scheduler(items, set(), 0, lambda i: None, seen.append)
    sched.finish(sched.next(), True)
    assert seen[-1]["phases"] == {"teacher": {"left": 0, "seconds": [30.0]}, "distill": {"left": 2, "seconds": []}}
    s0 = sched.next()
    s0.seconds = 2.0
    sched.finish(s0, True)
    assert seen[-1]["phases"]["distill"] == {"left": 1, "seconds": [2.0]}
    assert estimate_eta(seen[-1]["phases"], 1) == 2.0


def test_plan_of_every_shipped_spec_imports_neither_torch_nor_transformers():
    """`bench plan` validates model configs from data (allow-lists, JSON configs) and plans
    without importing torch or transformers, for every shipped spec: one fresh interpreter plans
    them all and then reads its sys.modules (machine-speed independent)."""
    specs = sorted(str(p) for p in (REPO / "sweeps").rglob("*.toml"))
    code = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from bench.cli import main
        codes = {}
        for spec in sys.argv[1:]:
            with contextlib.redirect_stdout(io.StringIO()):
                codes[spec] = main(["plan", spec])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "tokenizers"))
        print(json.dumps({"codes": codes, "heavy": heavy}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code, *specs], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(specs) >= 10 and set(got["codes"].values()) == {0}, got["codes"]
    assert got["heavy"] == []
