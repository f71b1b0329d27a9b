"""Every engine against the same faults and limits, on real processes: the local queue, and a
real local Dask cluster (two workers with fake GPU resources, jobs simulated on the CPU).

Each test has a generous timeout (a hang guard: an engine that hangs fails the test instead of the CI
run); tests wait on conditions, never on the clock, so a loaded machine only makes them slower.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import bench_cli, digits_spec, records
from procs import wait_for

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytest.importorskip("distributed")

ENGINES = ["local", "dask"]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _teacher_meta(project) -> dict:
    import json

    return {p.parent.name: json.loads(p.read_text()) for p in (project / "teachers" / "digits").glob("*/meta.json")}


@pytest.fixture
def fake_gpu_cluster(monkeypatch):
    """Start a local Dask cluster with two 'GPU' workers of ``threads`` threads each; yields a
    function (threads) -> scheduler address. Jobs on it run on the CPU (BENCH_SIMULATE_GPU)."""
    from bench.engines.cluster import local_cluster

    monkeypatch.setenv("BENCH_SIMULATE_GPU", "1")
    clusters = []

    def start(threads: int = 1, devices=("cuda:0", "cuda:1")) -> str:
        cluster = local_cluster(devices, threads, job_threads=1)
        clusters.append(cluster)
        return cluster.scheduler_address

    yield start
    for c in clusters:
        c.close()


def _engine_args(engine: str, fake_gpu_cluster, jobs_per_device: int, threads: int | None = None) -> list[str]:
    if engine == "local":
        return ["--devices", "cuda:0,cuda:1", "--jobs-per-device", str(jobs_per_device)]
    # more threads per worker than the GPU share allows: only the resources can hold the limit
    address = fake_gpu_cluster(threads or 2 * jobs_per_device)
    return ["--scheduler", address, "--gpus-per-job", str(1 / jobs_per_device)]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("jobs_per_gpu", [1, 2])
def test_gpu_limits_and_dependencies_are_respected(project, engine, jobs_per_gpu, fake_gpu_cluster):
    spec = digits_spec(project, n=3, r=2, student_epochs=20, train_subset=400)
    plan = make_plan(load_sweep(spec))
    proc = bench_cli(
        "run",
        str(spec),
        "--no-report",
        *_engine_args(engine, fake_gpu_cluster, jobs_per_gpu),
        cwd=project,
        env={"BENCH_SIMULATE_GPU": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in recs.values())
    teachers = _teacher_meta(project)
    runs = [(r["provenance"]["started"], r["provenance"]["finished"], r["cuda_visible_devices"]) for r in recs.values()]
    runs += [
        (m["provenance"]["started"], m["provenance"]["finished"], m["device"].split(":")[1]) for m in teachers.values()
    ]
    peak = _max_overlap([(a, b) for a, b, _ in runs])
    assert 2 <= peak <= 2 * jobs_per_gpu, f"{peak} jobs at once on 2 GPUs x {jobs_per_gpu}"
    for gpu in ("0", "1"):
        assert _max_overlap([(a, b) for a, b, g in runs if g == gpu]) <= jobs_per_gpu
    for r in recs.values():
        assert r["device"] in ("cuda:0", "cuda:1") and r["cuda_visible_devices"] == r["device"][-1]
        ready = max(teachers[k]["provenance"]["finished"] for k in r["teacher_keys"])
        assert r["provenance"]["started"] >= ready, "a job started before its teachers were stored"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ENGINES)
def test_an_exception_is_recorded_with_its_traceback_and_dependants_are_skipped(
    project, engine, fake_gpu_cluster, monkeypatch
):
    spec = digits_spec(project, n=3, r=1, run="retries = 1")
    plan = make_plan(load_sweep(spec))
    bad_teacher = plan.teachers[0].key
    bad_job = next(j for j in plan.jobs if bad_teacher not in j.teacher_keys)
    monkeypatch.setenv("BENCH_RAISE_ON", f"{bad_teacher},{bad_job.key}")  # before the cluster's workers start
    proc = bench_cli(
        "run",
        str(spec),
        "--no-report",
        *_engine_args(engine, fake_gpu_cluster, 1),
        cwd=project,
        env={"BENCH_SIMULATE_GPU": "1"},
    )
    assert proc.returncode == 1
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs}  # one record per planned job, whatever happened
    for job in plan.jobs:
        rec = recs[job.key]
        if bad_teacher in job.teacher_keys:
            assert rec["status"] == "skipped" and rec["attempts"] == 0
            assert f"teacher {bad_teacher} failed: RuntimeError: injected fault" in rec["error"]
            assert "Traceback" in rec["traceback"] and "injected fault" in rec["traceback"]
        elif job.key == bad_job.key:
            assert rec["status"] == "failed" and rec["attempts"] == 2 and len(rec["errors"]) == 2
            assert 'bench/engines/worker.py", line' in rec["traceback"]  # the remote traceback
        else:
            assert rec["status"] == "ok"
    n_skipped = sum(bad_teacher in j.teacher_keys for j in plan.jobs)
    assert f"teacher {bad_teacher} failed: {n_skipped} distillation job(s) that need it were not run" in proc.stderr
    assert (
        f"ran {len(plan.jobs) - n_skipped} jobs ({len(plan.jobs) - n_skipped - 1} ok, 1 failed, "
        f"{n_skipped} not run" in proc.stderr
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_worker_killed_mid_job_and_the_sweep_still_completes(project, engine, fake_gpu_cluster):
    """SIGKILL, from outside, the process running a distillation job: the job is rerun and the
    sweep ends with exactly one ok record per job."""
    import psutil

    spec = digits_spec(project, n=3, r=2, student_epochs=40, train_subset=600, run="retries = 2")
    plan = make_plan(load_sweep(spec))
    results = project / "results" / "tiny"
    args = _engine_args(engine, fake_gpu_cluster, 1, threads=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(spec), "--no-report", "--quiet", *args],
        cwd=project,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_SIMULATE_GPU": "1"},
    )
    wait_for(lambda: len(records(results)) >= 2 or proc.poll() is not None, "two records")
    if engine == "local":
        workers = [p for p in psutil.Process(proc.pid).children() if "bench.engines.worker" in " ".join(p.cmdline())]
        victim = workers[0]
    else:  # the Dask worker process (not its nanny) whose bench.engines.worker is busy
        from distributed import Client

        with Client(args[1], timeout=120) as client:
            busy = []

            def one_busy() -> bool:
                busy[:] = [
                    w for w, tasks in client.processing().items() if any(t.startswith("distill-") for t in tasks)
                ]
                return bool(busy)

            wait_for(one_busy, "a Dask worker running a distillation job")
            pids = client.run(os.getpid, workers=busy[:1])
        victim = psutil.Process(next(iter(pids.values())))
    os.kill(victim.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=800)
    assert proc.returncode == 0, err
    recs = records(results)
    assert set(recs) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in recs.values())
    if engine == "local":
        assert max(r["attempts"] for r in recs.values()) == 2  # the killed job's second attempt
    assert not list((results / "records").glob(".*"))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ENGINES)
def test_driver_sigkill_then_rerun_resumes(project, engine):
    """SIGKILL the whole `bench run` process group (driver, cluster, workers): no finished record
    is lost, the rerun completes exactly the plan (no loss, no duplicate), a further one runs nothing."""
    spec = digits_spec(project, n=3, r=3, student_epochs=30, train_subset=600)
    plan = make_plan(load_sweep(spec))
    results = project / "results" / "tiny"
    extra = ["--engine", "dask"] if engine == "dask" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(spec), "--quiet", *extra],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: len(records(results)) >= 4 or proc.poll() is not None, "four records")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records(results)
    assert 4 <= len(before) < len(plan.jobs), "the kill must land mid-sweep"
    rerun = bench_cli("run", str(spec), "--no-report", *extra, cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert f"ran {len(plan.jobs) - len(before)} jobs" in rerun.stderr
    after = records(results)
    assert set(after) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in after.values())
    assert all(after[k] == before[k] for k in before)  # finished work was kept, not repeated
    assert not list((results / "records").glob(".*"))  # a half-written temp file is cleaned up
    again = bench_cli("run", str(spec), "--no-report", *extra, cwd=project)
    assert again.returncode == 0 and "ran 0 jobs" in again.stderr
    shutil.rmtree(project / "teachers")  # teachers that no pending job needs are not trained again
    again = bench_cli("run", str(spec), "--no-report", *extra, cwd=project)
    assert "trained 0 teachers, ran 0 jobs" in again.stderr


@pytest.mark.timeout(900)
def test_the_dask_engine_gives_the_local_engine_scores(tmp_path):
    """Same job keys, same scores, same report tables: the engine changes nothing but where jobs run."""
    out = {}
    for engine in ENGINES:
        folder = tmp_path / engine
        folder.mkdir()
        spec = digits_spec(folder, n=3, r=2)
        proc = bench_cli("run", str(spec), "--engine", engine, cwd=folder)
        assert proc.returncode == 0, proc.stderr
        report = folder / "reports" / "tiny"
        out[engine] = (
            {k: r["score"] for k, r in records(folder / "results" / "tiny").items()},
            [(report / name).read_text() for name in ("summary_by_k.csv", "by_combination.csv")],
        )
    assert out["dask"] == out["local"]


@pytest.mark.timeout(900)
def test_a_gpu_request_no_worker_can_meet_fails_at_once(project, fake_gpu_cluster):
    spec = digits_spec(project, n=2, r=1)
    address = fake_gpu_cluster(1, devices=("cpu",))
    proc = bench_cli("run", str(spec), "--scheduler", address, "--gpus-per-job", "1", cwd=project)  # ends: no hang
    assert proc.returncode == 2, proc.stderr
    assert "each job asks for GPU=1" in proc.stderr and "offer GPU=0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / "results" / "tiny" / "records").exists()


@pytest.mark.timeout(900)
def test_a_local_cluster_binds_to_loopback(fake_gpu_cluster):
    from distributed import Client

    address = fake_gpu_cluster(1)
    assert address.startswith("tcp://127.0.0.1:")
    with Client(address, timeout=120) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    assert len(workers) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in workers)
    assert sorted(w["resources"]["GPU"] for w in workers.values()) == [1, 1]


@pytest.mark.timeout(900)
def test_a_multi_process_cluster_loses_a_worker_and_the_sweep_completes(project):
    """`dask scheduler` and two `dask worker` processes on loopback, as a user starts them on
    several hosts; one worker is SIGKILLed mid-sweep."""
    sched_file = project / "scheduler.json"
    env = {**os.environ, "BENCH_SIMULATE_GPU": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            env=env,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        wait_for(sched_file.exists, "the scheduler file")
        for gpu in ("0", "1"):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        "--scheduler-file",
                        str(sched_file),
                        "--nthreads",
                        "1",
                        "--resources",
                        "GPU=1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--name",
                        f"gpu{gpu}",
                    ],
                    env={**env, "CUDA_VISIBLE_DEVICES": gpu},
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        spec = digits_spec(project, n=3, r=2, student_epochs=40, train_subset=600, run="retries = 2")
        plan = make_plan(load_sweep(spec))
        results = project / "results" / "tiny"
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.cli",
                "run",
                str(spec),
                "--no-report",
                "--quiet",
                "--scheduler",
                str(sched_file),
                "--gpus-per-job",
                "1",
            ],
            cwd=project,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        wait_for(lambda: len(records(results)) >= 3 or run.poll() is not None, "three records")
        os.killpg(procs[1].pid, signal.SIGKILL)  # worker gpu0: its nanny, worker and job process
        kill_time = time.time()
        _, err = run.communicate(timeout=800)
        assert run.returncode == 0, err
        recs = records(results)
        assert set(recs) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in recs.values())
        after = [r for r in recs.values() if r["provenance"]["started"] > kill_time]
        assert after and all(r["slot"].startswith("gpu1#") for r in after)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


SLURM_RUN = """
engine = "slurm"
[run.slurm]
host = "127.0.0.1"
partition = "gpu"
account = "myproject"
walltime = "12:00:00"
cores = 8
memory = "64GB"
lifetime = "11h30m"
job_directives = ["--constraint=a100"]
prologue = ["module load cuda", "source ~/venvs/bench/bin/activate"]
python = "python3"
"""


@pytest.mark.timeout(900)
def test_the_slurm_worker_job_script(project):
    spec = digits_spec(project, n=2, r=1, run=SLURM_RUN)
    proc = bench_cli("slurm-script", str(spec), cwd=project)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A myproject",
        "#SBATCH -t 12:00:00",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --constraint=a100",
        "#SBATCH --mem=60G",
        "module load cuda",
        "source ~/venvs/bench/bin/activate",
    ):
        assert line in script, f"{line!r} not in\n{script}"
    worker = next(ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln)
    assert worker.startswith("python3 -m distributed.cli.dask_worker tcp://127.0.0.1:")
    for arg in ("--nthreads 8", "--resources GPU=1", "--lifetime 11h30m", "--lifetime-stagger 10m"):
        assert arg in worker, worker
    assert load_sweep(spec).run.gpu_share() == 0.5  # two students per GPU


@pytest.mark.parametrize(
    "run, field, expected",
    [
        ('engine = "dsak"', "run.engine", "did you mean 'dask'?"),
        ('engine = "slurm"', "run.slurm.host", "reachable from the compute nodes"),
        ('scheduler = "tcp://127.0.0.1:8786"', "run.scheduler", "for engine 'dask'"),
        ('engine = "dask"\ngpus_per_job = 2', "run.gpus_per_job", "0 <= value <= 1"),
        ('engine = "dask"\n[run.slurm]\nhots = "x"', "run.slurm.hots", "did you mean 'host'?"),
    ],
)
def test_engine_settings_are_checked(project, run, field, expected):
    from bench.core.errors import SpecError

    spec = digits_spec(project, run=run)
    with pytest.raises(SpecError) as e:
        load_sweep(spec)
    assert e.value.field == field and expected in str(e.value)
