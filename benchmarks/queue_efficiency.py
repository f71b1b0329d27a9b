"""Queue efficiency, per-job overhead and slot scaling on a sweep of many short jobs (issue:
performance, items 2-4). Everything is measured in this one run; the figures are ratios.

On a copy of the quickstart (189 distillation jobs by default; `--repeats` makes more), with
its 6 teachers trained first (not timed):
  efficiency   sum over jobs of in-job train + eval seconds / (slots x sweep wall seconds),
               for 2 slots (target >= 0.90);
  overhead     per job, in ms: the sweep wall x slots minus the in-job seconds, spread over the
               jobs; and the one-off costs a job would pay without a long-lived worker:
               interpreter start, imports (torch + bench), task data loading, teacher-cache
               loading (k=6), each measured here;
  scaling      sweep wall with 1 slot / with 2 slots (target >= 1.8 on a 2-core machine);
  end to end   the quickstart's `bench run` wall (teachers, jobs and report) in a fresh folder.

    .venv/bin/python benchmarks/queue_efficiency.py [--repeats 3] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bench.cli"]


def _spec(folder: Path, repeats: int, slots: int) -> Path:
    text = (REPO / "sweeps" / "quickstart.toml").read_text()
    text = re.sub(r"(?m)^repeats = \d+", f"repeats = {repeats}", text)
    text = re.sub(r"(?m)^jobs_per_device = \d+", f"jobs_per_device = {slots}\nthreads_per_job = 1", text)
    path = folder / "quickstart.toml"
    path.write_text(text)
    return path


def _run(folder: Path, *args: str, report: bool = False) -> tuple[float, float]:
    """(wall seconds of the command, the sweep seconds it prints)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*BENCH, "run", *args, "--quiet", *([] if report else ["--no-report"])],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    m = re.search(r"in ([\d.]+) s", proc.stderr)
    return wall, float(m.group(1)) if m else float("nan")


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (folder / "results" / "quickstart" / "records").glob("*.json")]


def _sweep(folder: Path, spec: Path, slots: int) -> dict:
    shutil.rmtree(folder / "results", ignore_errors=True)
    wall, sweep = _run(folder, str(spec), "--jobs-per-device", str(slots))
    recs = _records(folder)
    work = sum(r["timings"]["train"] + r["timings"]["eval"] for r in recs)
    in_job = sum(r["timings"]["total"] for r in recs)
    return {
        "slots": slots,
        "jobs": len(recs),
        "command_wall": wall,
        "sweep_wall": sweep,
        "work": work,
        "in_job": in_job,
        "efficiency": work / (slots * sweep),
        "overhead_ms_per_job": 1000 * (slots * sweep - work) / len(recs),
        "outside_job_ms_per_job": 1000 * (slots * sweep - in_job) / len(recs),
    }


def _one_off_costs(folder: Path, spec: Path) -> dict:
    """Interpreter start, imports, data loading and teacher-cache loading, each in a fresh process."""

    def timed(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=folder, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return time.perf_counter() - t0

    interp = min(timed("pass") for _ in range(3))
    imports = min(timed("import torch, bench.engines.runners") for _ in range(3)) - interp
    probe = f"""
import time, json
from bench.spec.load import load_sweep
from bench.plan.jobs import make_plan
from bench.engines import runners as jobs
plan = make_plan(load_sweep({str(spec)!r}))
job = next(j for j in plan.jobs if j.k == 6)
t0 = time.perf_counter(); data = jobs.load_task(job.config, '.cache/bench'); t1 = time.perf_counter()
for k in job.teacher_keys: jobs.teacher_logits('teachers', data.name, k)
t2 = time.perf_counter()
print(json.dumps({{"data": t1 - t0, "teachers": t2 - t1}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=folder, check=True, capture_output=True, text=True)
    loads = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "interpreter_ms": 1000 * interp,
        "imports_ms": 1000 * imports,
        "data_loading_ms": 1000 * loads["data"],
        "teacher_cache_k6_ms": 1000 * loads["teachers"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="r of the quickstart copy (3: 189 jobs)")
    ap.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end quickstart run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        folder = Path(tmp)
        spec = _spec(folder, args.repeats, 2)
        subprocess.run(
            [*BENCH, "run", str(spec), "--teachers-only", "--quiet", "--no-report"],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        two = _sweep(folder, spec, 2)
        one = _sweep(folder, spec, 1)
        costs = _one_off_costs(folder, spec)
        e2e = None
        if not args.skip_e2e:
            fresh = folder / "fresh"
            fresh.mkdir()
            shutil.copy(REPO / "sweeps" / "quickstart.toml", fresh / "quickstart.toml")
            e2e = _run(fresh, "quickstart.toml", report=True)
    print(
        f"machine: {os.cpu_count()} cores; {two['jobs']} distillation jobs (quickstart, r={args.repeats}), "
        f"teachers trained beforehand"
    )
    for r in (two, one):
        print(
            f"{r['slots']} slot(s): sweep {r['sweep_wall']:.1f} s, in-job train+eval {r['work']:.1f} s "
            f"(setup+train+eval {r['in_job']:.1f} s) -> efficiency {r['efficiency']:.3f}; "
            f"overhead {r['overhead_ms_per_job']:.1f} ms/job ({r['outside_job_ms_per_job']:.1f} ms/job outside jobs)"
        )
    print(f"slot scaling: wall 1 slot / 2 slots = {one['sweep_wall'] / two['sweep_wall']:.2f}")
    print(
        "one-off costs a per-job process would pay: "
        + ", ".join(f"{k} {v:.0f}" for k, v in costs.items())
        + f" (ms); the mean job itself: {1000 * two['in_job'] / two['jobs']:.0f} ms"
    )
    if e2e:
        print(
            f"end to end: `bench run sweeps/quickstart.toml` (teachers, jobs, report) in a fresh folder: "
            f"{e2e[0]:.1f} s wall (sweep {e2e[1]:.1f} s), budget 300 s"
        )


if __name__ == "__main__":
    main()
