"""A job that raises, crashes its process, diverges or runs out of memory: each is recorded once,
with what went wrong, retried per policy, and the set of records equals the plan afterwards."""

import pytest
from helpers import bench_cli, digits_spec, records

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)  # a hang guard, not a speed limit


def _plan(spec):
    return make_plan(load_sweep(spec))


def test_raising_jobs_are_retried_then_recorded_and_a_rerun_finishes_them(project):
    spec = digits_spec(project, n=2, r=1, run="retries = 1")
    plan = _plan(spec)
    victims = [j.key for j in plan.jobs if 1 in j.combination]
    proc = bench_cli("run", str(spec), "--no-report", cwd=project, env={"BENCH_RAISE_ON": ",".join(victims)})
    assert proc.returncode == 1, proc.stderr
    results = project / "results" / "tiny"
    recs = records(results)
    assert set(recs) == {j.key for j in plan.jobs}
    for job in plan.jobs:
        rec = recs[job.key]
        if job.key in victims:
            assert rec["status"] == "failed" and rec["attempts"] == 2 and len(rec["errors"]) == 2
            assert rec["error"] == "RuntimeError: injected fault (BENCH_RAISE_ON)" and rec["error_kind"] == "error"
            assert "Traceback (most recent call last)" in rec["traceback"]
        else:
            assert rec["status"] == "ok" and rec["attempts"] == 1
    assert f"{len(victims)} failed" in proc.stderr
    proc = bench_cli("run", str(spec), "--no-report", cwd=project)  # the rerun runs exactly the failed jobs
    assert proc.returncode == 0 and f"ran {len(victims)} jobs ({len(victims)} ok" in proc.stderr
    assert set(records(results)) == {j.key for j in plan.jobs}
    assert all(r["status"] == "ok" for r in records(results).values())


def test_a_crashing_worker_costs_only_its_job(project):
    spec = digits_spec(project, n=2, r=2, run="retries = 2")
    plan = _plan(spec)
    victim = plan.jobs[1]
    proc = bench_cli("run", str(spec), "--no-report", cwd=project, env={"BENCH_CRASH_ON": victim.key})
    assert proc.returncode == 1
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs}
    assert recs[victim.key]["status"] == "failed" and recs[victim.key]["attempts"] == 3
    assert "worker process died" in recs[victim.key]["error"] and recs[victim.key]["error_kind"] == "crash"
    assert sum(r["status"] == "ok" for r in recs.values()) == len(plan.jobs) - 1


def test_diverged_training_is_recorded_with_its_step_and_never_scored(project):
    spec = digits_spec(project, n=2, r=2, run="retries = 2")
    spec.write_text(
        spec.read_text().replace("epochs = 2\nbatch_size = 64\nlr = 0.01", "epochs = 2\nbatch_size = 64\nlr = 1e30")
    )
    plan = _plan(spec)
    proc = bench_cli("run", str(spec), cwd=project)
    assert proc.returncode == 0, proc.stderr  # a diverged run is an outcome, not a failure
    assert f"{len(plan.jobs)} diverged" in proc.stderr
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs}
    for rec in recs.values():
        assert rec["status"] == "diverged" and rec["error_kind"] == "diverged"
        assert rec["score"] is None and rec["scores"] is None
        assert isinstance(rec["diverged_at_step"], int) and rec["attempts"] == 1  # deterministic: not retried
        assert f"non-finite loss at step {rec['diverged_at_step']}" in rec["error"]
    assert f"{len(plan.jobs)} diverged (no score)" in (project / "reports" / "tiny" / "report.md").read_text()
    again = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert "ran 0 jobs" in again.stderr  # a diverged record is final


@pytest.mark.parametrize("retry_on, attempts", [('["oom"]', 3), ('["error"]', 1)])
def test_out_of_memory_is_retried_per_policy(project, retry_on, attempts):
    spec = digits_spec(project, n=2, r=1, run=f"retries = 2\nretry_on = {retry_on}")
    plan = _plan(spec)
    victim = plan.jobs[0].key
    proc = bench_cli("run", str(spec), "--no-report", cwd=project, env={"BENCH_OOM_ON": victim})
    assert proc.returncode == 1
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs}
    rec = recs[victim]
    assert rec["status"] == "failed" and rec["error_kind"] == "oom" and rec["attempts"] == attempts
    assert "OutOfMemoryError: simulated out of memory" in rec["error"]


def test_a_job_over_run_timeout_is_killed_retried_and_recorded(project):
    spec = digits_spec(project, n=2, r=1, run="retries = 1\ntimeout = 30")
    plan = _plan(spec)
    victim = plan.jobs[0]
    proc = bench_cli("run", str(spec), "--no-report", cwd=project, env={"BENCH_HANG_ON": victim.key})
    assert proc.returncode == 1, proc.stderr
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs}  # the hung job cost its worker, not the sweep
    rec = recs[victim.key]
    assert rec["status"] == "failed" and rec["error_kind"] == "timeout" and rec["attempts"] == 2
    assert "timed out after" in rec["error"]
    assert all(r["status"] == "ok" for k, r in recs.items() if k != victim.key)
