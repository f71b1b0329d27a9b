"""The torch thread count changes scores and is not in the job keys: `run.threads_per_job` decides it
on every engine, every record and teacher meta holds it, and resuming results made with another count
is refused before any job runs (one line, exit code 2) unless `--mixed-threads`."""

from __future__ import annotations

import json

import pytest
from helpers import bench_cli, digits_spec, records

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)


def _spec(project, threads: int, **kw):
    spec = digits_spec(project, **kw)
    spec.write_text(spec.read_text().replace("threads_per_job = 1", f"threads_per_job = {threads}"))
    return spec


def _teacher_threads(project) -> list:
    return [json.loads(p.read_text()).get("threads") for p in (project / "teachers" / "digits").glob("*/meta.json")]


@pytest.mark.parametrize("engine", ["local", "dask-scheduler"])
def test_threads_per_job_decides_the_thread_count_on_every_engine(project, engine):
    """A Dask worker started with BENCH_THREADS=1 (as `bench.engines.cluster.local_cluster` or an admin sets
    it) used to give its jobs 1 thread whatever the spec said."""
    spec = _spec(project, 2, n=2, r=1)
    args = []
    cluster = None
    if engine == "dask-scheduler":
        pytest.importorskip("distributed")
        from bench.engines.cluster import local_cluster

        cluster = local_cluster(("cpu",), 2, job_threads=1)
        args = ["--scheduler", cluster.scheduler_address]
    try:
        proc = bench_cli("run", str(spec), "--no-report", *args, cwd=project)
    finally:
        if cluster is not None:
            cluster.close()
    assert proc.returncode == 0, proc.stderr
    recs = records(project / "results" / "tiny")
    assert recs and {r["threads"] for r in recs.values()} == {2}
    assert _teacher_threads(project) == [2, 2]


def test_resuming_with_another_thread_count_is_refused_unless_asked(project):
    spec = _spec(project, 1, n=2, r=1)
    plan = make_plan(load_sweep(spec))
    results = project / "results" / "tiny"
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    gone = plan.jobs[0].key
    (results / "records" / f"{gone}.json").unlink()  # one job left to do
    before = sorted(p.name for p in project.rglob("*"))
    spec.write_text(spec.read_text().replace("threads_per_job = 1", "threads_per_job = 2"))
    refused = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {spec}: field 'run.threads_per_job': expected the torch thread count this sweep's results were "
        f"made with (1 thread(s): {len(plan.jobs) - 1} records, 2 teachers), got 2; scores depend on it, so set "
        f"run.threads_per_job = 1, or pass --mixed-threads to resume with 2 anyway"
    ], refused.stderr
    assert sorted(p.name for p in project.rglob("*")) == before  # nothing ran, nothing written
    mixed = bench_cli("run", str(spec), "--no-report", "--mixed-threads", cwd=project)
    assert mixed.returncode == 0 and "ran 1 jobs" in mixed.stderr, mixed.stderr
    assert records(results)[gone]["threads"] == 2
    nothing_to_do = bench_cli("run", str(spec), "--no-report", cwd=project)  # no job runs: nothing to refuse
    assert nothing_to_do.returncode == 0, nothing_to_do.stderr


def test_slurm_threads_come_from_the_allocation_and_never_exceed_it(project):
    """Slurm: by default a job's threads are the worker job's cores / the jobs it runs at once; a
    threads_per_job that would exceed the cores is refused by the spec check (file, field, limit),
    and a worker job that Slurm gave fewer CPUs than asked refuses jobs rather than oversubscribe."""
    pytest.importorskip("distributed")
    from bench.engines.dask_engine import oversubscribed
    from bench.engines.dispatch import job_threads

    slurm = '\nengine = "slurm"\n[run.slurm]\nhost = "127.0.0.1"\ncores = 4\ngpus = {gpus}\n'
    spec = _spec(project, 0, run=slurm.format(gpus=1))  # jobs_per_device = 2: two students per GPU
    assert job_threads(load_sweep(spec).run) == 2
    assert job_threads(load_sweep(_spec(project, 0, run=slurm.format(gpus=0))).run) == 1  # 4 CPU jobs at once
    proc = bench_cli("plan", str(_spec(project, 3, run=slurm.format(gpus=1))), cwd=project)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "tiny.toml" in proc.stderr and "run.threads_per_job" in proc.stderr and "<= 2" in proc.stderr

    job = {"job_id": "7", "node": "n1", "cpus": 4, "gpus": "0"}
    assert oversubscribed(2, 0.5, nthreads=4, gpus=1, job=job) is None  # 2 at once (GPU-bound) x 2 threads
    assert oversubscribed(1, 0.0, nthreads=4, gpus=0, job=job) is None
    problem = oversubscribed(2, 0.0, nthreads=4, gpus=0, job=job)  # 4 at once x 2 threads > 4 CPUs
    assert "Slurm job 7 has 4 CPU(s) for 4 job(s)" in problem and "threads_per_job <= 1" in problem
    assert oversubscribed(64, 0.0, nthreads=4, gpus=0, job=None) is None  # not in Slurm: nothing to check
