"""A worker process that dies at any moment (while starting, idle between jobs, mid-job) costs at
most one attempt of one job: the sweep goes on with a replacement and ends with one ok record per
job; exit code 2 stays reserved for user errors. Real processes, killed from outside (their pids
found by the run's tag in /proc); mid-job kills: tests/faults/test_engines.py."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import digits_spec, records
from procs import imported_torch, job_processes, kill_tagged, start_run, wait_for

from bench.driver.run import teacher_payload
from bench.engines.queue import Item, make_slots, run_queue
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)


def _teacher_attempts(project) -> dict[str, int]:
    return {
        p.parent.name: json.loads(p.read_text())["attempt"]
        for p in (project / "teachers" / "digits").glob("*/meta.json")
    }


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_a_worker_killed_while_starting_costs_its_job_one_attempt(project, engine):
    """SIGKILL each of the first two job processes before it has even loaded torch (as the OOM
    killer does while it imports): the run used to stop with exit code 2; now each kill costs the
    teacher it was started for one attempt and the sweep completes."""
    if engine == "dask":
        pytest.importorskip("distributed")
    spec = digits_spec(project, n=3, r=1, run="retries = 2")
    plan = make_plan(load_sweep(spec))
    proc, tag = start_run(spec, project, "--engine", engine)
    seen: set[int] = set()
    killed: list[int] = []
    try:

        def two_killed_at_start() -> bool:
            for p in job_processes(tag):
                if p.pid in seen:
                    continue
                seen.add(p.pid)
                if not imported_torch(p.pid):  # surely before its ready line
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)
            return len(killed) >= 2 or proc.poll() is not None or len(seen) >= 6

        wait_for(two_killed_at_start, "two job processes to kill while they start", every=0.005)
        _, err = proc.communicate(timeout=600)
    finally:
        kill_tagged(tag)
    assert killed, "no job process was caught before it loaded torch"
    assert proc.returncode == 0, err
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in recs.values())
    attempts = _teacher_attempts(project)
    assert len(attempts) == 3 and sum(a - 1 for a in attempts.values()) == len(killed), attempts


def test_a_worker_killed_while_idle_costs_no_attempt(tmp_path):
    """Kill the slot's worker right after each reply (it is idle, waiting for its next job): the next
    job goes to a fresh process and keeps its attempt count."""
    spec = digits_spec(tmp_path, n=3, r=1)
    plan = make_plan(load_sweep(spec))
    items = [Item(key=t.key, kind="teacher", payload=teacher_payload(plan, t)) for t in plan.teachers]
    kills: list[int] = []

    def progress(counts: dict) -> None:  # called by the slot's thread after a reply: the worker is idle
        if counts["done"] > len(kills) and counts["remaining"]:
            import psutil

            for child in psutil.Process().children():
                if "bench.engines.worker" in " ".join(child.cmdline()):
                    child.kill()
                    kills.append(child.pid)

    os.chdir(tmp_path)
    result = run_queue(
        items,
        make_slots(("cpu",), 1, 1),
        tmp_path / "logs",
        retries=0,
        timeout=0,
        max_jobs_per_worker=0,
        on_final_failure=lambda item: None,
        progress=progress,
    )
    assert len(kills) == 2 and len(result.done) == 3 and not result.failed
    assert all(i.attempts == 1 for i in result.done)
