"""Signals to the driver alone (`kill PID`, Ctrl-C, the OOM killer): SIGINT / SIGTERM stop it with one
line and exit 130 / 143 after stopping its workers; SIGKILL leaves no worker running either (each
dies with its parent); the lock is released and a rerun does only what was not finished."""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import bench_cli, digits_spec, records
from procs import job_processes, kill_tagged, start_run, tagged, wait_for

from bench.driver.run import lock_holder
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)

CASES = [
    ("local", signal.SIGINT),
    ("local", signal.SIGTERM),
    ("local", signal.SIGKILL),
    ("dask", signal.SIGINT),
    ("dask", signal.SIGTERM),
    ("dask", signal.SIGKILL),
]


@pytest.mark.parametrize("engine,sig", CASES, ids=[f"{e}-{s.name}" for e, s in CASES])
def test_a_signal_to_the_driver_stops_its_workers_and_a_rerun_resumes(project, engine, sig):
    if engine == "dask":
        pytest.importorskip("distributed")
    spec = digits_spec(project, n=3, r=3, student_epochs=40, train_subset=600)
    plan = make_plan(load_sweep(spec))
    results = project / "results" / "tiny"
    proc, tag = start_run(spec, project, "--engine", engine)
    try:
        wait_for(
            lambda: len(records(results)) >= 2 and job_processes(tag) or proc.poll() is not None,
            "two records and a running job",
        )
        assert proc.poll() is None, "the sweep ended before the signal"
        kill_time = time.time()
        os.kill(proc.pid, sig)  # the driver alone, not its process group
        _, err = proc.communicate(timeout=300)
        wait_for(lambda: not tagged(tag), "every process of the run to end", limit=300)
    finally:
        kill_tagged(tag)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        late = [r for r in records(results).values() if r["provenance"]["finished"] > kill_time + 1.0]
        assert not late, "a job kept running (and finished) after its driver was killed"
    else:
        assert proc.returncode == 128 + sig, err
        assert err.strip().splitlines() == [
            f"interrupted by {sig.name}: stopped; every finished result is kept "
            f"and the next `bench run` continues from them"
        ], err
        assert (results / ".lock").read_text() == ""  # released cleanly
    assert lock_holder(results) is None
    before = records(results)
    assert 2 <= len(before) < len(plan.jobs) and all(r["status"] == "ok" for r in before.values())
    rerun = bench_cli("run", str(spec), "--no-report", "--engine", engine, cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert f"ran {len(plan.jobs) - len(before)} jobs" in rerun.stderr
    after = records(results)
    assert set(after) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in after.values())
    assert all(after[k] == before[k] for k in before)  # finished work kept, not redone


def test_importing_dask_jobqueue_does_not_take_ctrl_c_away(project):
    """dask-jobqueue 0.9.0 replaces the SIGINT handler when imported (Ctrl-C then ended `bench run`
    with exit code 0): the engines install bench's handler again after their imports."""
    pytest.importorskip("dask_jobqueue")
    import subprocess
    import sys

    code = (
        "import signal, bench.core.interrupt as i; i.install(); import dask_jobqueue; "
        "from bench.engines.dask_engine import drive\n"
        "try:\n drive(None, [], None, None, None, None)\nexcept Exception:\n pass\n"
        "print(signal.getsignal(signal.SIGINT) is i._handler)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "True", out.stderr


def test_a_sigint_ignored_at_start_stays_ignored_after_dask_jobqueue_replaced_it():
    """`bench run ... &` from a script starts with SIGINT ignored; dask-jobqueue's handler, installed
    on import, would make it exit 0 mid-sweep. install() puts SIG_IGN back and still takes SIGTERM."""
    pytest.importorskip("dask_jobqueue")
    import subprocess
    import sys

    code = (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "import bench.core.interrupt as i; i.install(); import dask_jobqueue\n"
        "replaced = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN; i.install()\n"
        "print(replaced, signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "
        "signal.getsignal(signal.SIGTERM) is i._handler)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_jobs_on_a_dask_cluster_that_outlives_the_driver_stop_with_it(project, monkeypatch, sig):
    """`--scheduler ADDRESS`: the cluster is the user's and stays; the driver's job processes on it
    end when the driver stops or dies (a watchdog on the driver, and Dask releasing the task)."""
    pytest.importorskip("distributed")
    import uuid

    from procs import TAG

    from bench.engines.cluster import local_cluster

    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)  # the cluster's workers, and so their job processes, carry it
    spec = digits_spec(project, n=3, r=3, student_epochs=40, train_subset=600)
    results = project / "results" / "tiny"
    cluster = local_cluster(("cpu",), 2, job_threads=1)
    try:
        proc, _ = start_run(spec, project, "--scheduler", cluster.scheduler_address)
        wait_for(
            lambda: len(records(results)) >= 2 and job_processes(tag) or proc.poll() is not None,
            "two records and a running job",
        )
        assert proc.poll() is None, "the sweep ended before the signal"
        kill_time = time.time()
        os.kill(proc.pid, sig)
        proc.communicate(timeout=300)
        wait_for(lambda: not job_processes(tag), "the job processes to end", limit=300)
        late = [r for r in records(results).values() if r["provenance"]["finished"] > kill_time + 1.0]
        assert not late, "a job kept running (and finished) after its driver was stopped"
        assert proc.returncode == (128 + sig if sig != signal.SIGKILL else -sig)
    finally:
        cluster.close()
        for p in job_processes(tag):  # not kill_tagged: this test's own helpers carry the tag too
            p.kill()
