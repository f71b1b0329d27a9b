"""A SIGKILL of the whole `bench run` process group loses no finished record; the rerun
completes exactly the plan (no loss, no duplicate) and a further rerun runs nothing."""

import os
import shutil
import signal
import subprocess
import sys
import time

from bench.plan import make_plan
from bench.spec import load_sweep
from helpers import bench_cli, digits_spec, records


def test_sigkill_mid_sweep_then_rerun(project):
    spec = digits_spec(project, n=4, r=4, student_epochs=30, train_subset=600)
    plan = make_plan(load_sweep(spec))
    results = project / "results" / "tiny"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(spec), "--quiet"], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(records(results)) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records(results)
    assert 5 <= len(before) < len(plan.jobs), "the kill must land mid-sweep"
    assert all(r["status"] == "ok" for r in before.values())

    rerun = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert f"ran {len(plan.jobs) - len(before)} jobs" in rerun.stderr
    after = records(results)
    assert set(after) == {j.key for j in plan.jobs}  # none lost, none extra
    assert all(r["status"] == "ok" for r in after.values())
    assert all(after[k] == before[k] for k in before)  # finished work was not repeated
    assert not list((results / "records").glob(".*"))  # a half-written temp file is cleaned up

    again = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert again.returncode == 0 and "ran 0 jobs" in again.stderr
    # teachers that no pending job needs are not trained again
    shutil.rmtree(project / "teachers")
    again = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert "trained 0 teachers, ran 0 jobs" in again.stderr
