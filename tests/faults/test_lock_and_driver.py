"""One driver per sweep: a second `bench run` is refused with a message naming the holder; a lock
left by a killed driver is taken over; `bench doctor` reports what a rerun would do."""

import os
import signal
import subprocess
import sys

import pytest
from helpers import bench_cli, digits_spec, records
from procs import wait_for

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)  # a hang guard, not a speed limit


def _start(spec, project):
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(spec), "--quiet", "--no-report"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(project):
    spec = digits_spec(project, n=4, r=3, student_epochs=30, train_subset=600)
    plan = make_plan(load_sweep(spec))
    results = project / "results" / "tiny"
    first = _start(spec, project)
    wait_for(lambda: (results / ".lock").is_file() and (results / ".lock").read_text().strip(), "the lock")
    second = bench_cli("run", str(spec), cwd=project)
    assert second.returncode == 2 and "another `bench run` of this sweep is running" in second.stderr
    assert f"pid {first.pid} on " in second.stderr and "Traceback" not in second.stderr
    wait_for(lambda: len(records(results)) >= 3 or first.poll() is not None, "three records")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    rerun = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert f"took over the lock of a run that ended without releasing it: pid {first.pid}" in rerun.stderr
    recs = records(results)
    assert set(recs) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in recs.values())
    assert (results / ".lock").read_text() == ""  # released cleanly this time


def test_doctor_groups_failures_and_says_what_a_rerun_would_do(project):
    spec = digits_spec(project, n=3, r=1, run="retries = 0")
    plan = make_plan(load_sweep(spec))
    bad_teacher = plan.teachers[2].key
    bad_jobs = [j.key for j in plan.jobs if bad_teacher not in j.teacher_keys][:2]
    proc = bench_cli(
        "run", str(spec), "--no-report", cwd=project, env={"BENCH_RAISE_ON": ",".join([bad_teacher, *bad_jobs])}
    )
    assert proc.returncode == 1
    skipped = sum(bad_teacher in j.teacher_keys for j in plan.jobs)
    ok = len(plan.jobs) - skipped - len(bad_jobs)
    doctor = bench_cli("doctor", str(spec), cwd=project)
    assert doctor.returncode == 0, doctor.stderr
    out = doctor.stdout
    assert f"{ok} ok, 0 diverged, {len(bad_jobs)} failed, {skipped} skipped" in out
    assert "teachers: 2 of 3 stored, 1 missing" in out
    assert f"{len(bad_jobs)} x RuntimeError: injected fault (BENCH_RAISE_ON)" in out
    assert f"train 1 teachers, run {len(bad_jobs) + skipped} jobs" in out and "lock: free" in out
    rerun = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert rerun.returncode == 0 and f"trained 1 teachers, ran {len(bad_jobs) + skipped} jobs" in rerun.stderr
    assert "run 0 jobs" in bench_cli("doctor", str(spec), cwd=project).stdout
    assert set(records(project / "results" / "tiny")) == {j.key for j in plan.jobs}
