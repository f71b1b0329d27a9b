"""`--engine slurm` on a real Slurm cluster: the single-node one of scripts/slurm-local (slurmctld,
slurmd and munge on this machine, 2 fake GPUs as character devices), which `.ci/run` starts when
it runs as root with apt (it then sets BENCH_SLURM=1, and a missing cluster fails these tests
instead of skipping them). Elsewhere they skip, naming the command that starts the cluster.

Each test drives `bench run` as a user would (a subprocess) and watches the cluster with `squeue`.
Waits are on conditions, never on the clock: a loaded machine only makes them slower.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import bench_cli, digits_spec, records
from procs import wait_for

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]
pytest.importorskip("dask_jobqueue")

UP = "sudo scripts/slurm-local up --gpus 2"


def _cluster_problem() -> str | None:
    if not shutil.which("sinfo"):
        return "Slurm is not installed"
    out = subprocess.run(["sinfo", "-h", "-o", "%T %G"], capture_output=True, text=True, timeout=60)
    states = out.stdout.split()
    if out.returncode or not states or states[0] not in ("idle", "mixed", "allocated"):
        return f"no Slurm node ready (sinfo: {(out.stdout or out.stderr).strip() or 'nothing'})"
    if "gpu:2" not in out.stdout:
        return f"the Slurm node has no 2 GPUs (sinfo: {out.stdout.strip()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    problem = _cluster_problem()
    if problem and os.environ.get("BENCH_SLURM") == "1":
        pytest.fail(f"BENCH_SLURM=1 but {problem}")
    if problem:
        pytest.skip(f"{problem}: start a local cluster with `{UP}` (.ci/run does when root)")
    # worker jobs of an earlier, killed test session would hold the cores the tests count on
    wait_for(
        lambda: not [j for j in queue() if j["name"].startswith("bench-")],
        "earlier bench worker jobs to end",
        limit=300,
        every=1,
    )


SLURM_RUN = """
engine = "slurm"
worker_wait = 600
retries = 2
{extra}
[run.slurm]
host = "127.0.0.1"
cores = 1
memory = "2GB"
walltime = "00:30:00"
gpus = {gpus}
max_workers = {max_workers}
"""


def slurm_spec(folder: Path, gpus: int = 0, max_workers: int = 2, extra: str = "", **kw) -> Path:
    return digits_spec(folder, run=SLURM_RUN.format(gpus=gpus, max_workers=max_workers, extra=extra), **kw)


def queue() -> list[dict]:
    """This user's Slurm jobs: id, name, state."""
    out = subprocess.run(
        ["squeue", "-h", "-u", str(os.getuid()), "-o", "%i|%j|%T"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [dict(zip(("id", "name", "state"), line.split("|"))) for line in out.splitlines() if line.strip()]


class Driver:
    """`bench run SPEC --engine slurm` in the background, with the worker jobs it was seen to have."""

    def __init__(self, spec: Path, cwd: Path, *args: str, env: dict | None = None):
        self.err = cwd / "driver.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "run", str(spec), "--no-report", *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=self.err.open("w"),
            env={**os.environ, **(env or {})},
        )
        self.seen: dict[str, set[str]] = {}  # job id -> states seen
        self._watch = threading.Thread(target=self._poll, daemon=True)
        self._watch.start()

    def name(self) -> str | None:
        found = re.search(r"worker jobs are named (bench-[0-9a-f]{8})", self.err.read_text())
        return found.group(1) if found else None

    def jobs(self) -> list[dict]:
        name = self.name()
        return [j for j in queue() if name and j["name"] == name]

    def _poll(self) -> None:
        while self.proc.poll() is None:
            for j in self.jobs():
                self.seen.setdefault(j["id"], set()).add(j["state"])
            try:
                self.proc.wait(0.3)
            except subprocess.TimeoutExpired:
                pass

    def wait(self) -> tuple[int, str]:
        code = self.proc.wait(800)
        self._watch.join()
        return code, self.err.read_text()


def ok_records(folder: Path) -> dict[str, dict]:
    return {k: r for k, r in records(folder / "results" / "tiny").items() if r["status"] == "ok"}


def plan_keys(spec: Path) -> set[str]:
    return {j.key for j in make_plan(load_sweep(spec)).jobs}


def test_a_sweep_on_slurm_with_fake_gpus_matches_the_local_engine(tmp_path):
    """Worker jobs appear in squeue, one fake GPU each; records == plan, each naming its Slurm job,
    its GPU and threads that fit the allocation; scores equal the local engine's by key; nothing
    is left in the queue."""
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    local.mkdir(), slurm.mkdir()
    proc = bench_cli("run", str(digits_spec(local, n=3, r=2)), "--no-report", "--quiet", cwd=local)
    assert proc.returncode == 0, proc.stderr
    spec = slurm_spec(slurm, gpus=1, extra="gpus_per_job = 1", n=3, r=2)
    driver = Driver(spec, slurm, env={"BENCH_SIMULATE_GPU": "1"})
    code, err = driver.wait()
    assert code == 0, err
    assert driver.seen, "no worker job was seen in squeue"
    wait_for(lambda: not driver.jobs(), "the worker jobs to leave the queue", limit=60)

    got, want = ok_records(slurm), ok_records(local)
    assert set(got) == set(want) == plan_keys(spec)
    assert {k: r["score"] for k, r in got.items()} == {k: r["score"] for k, r in want.items()}
    gpus = {}
    for r in got.values():
        job = r["provenance"]["slurm"]
        assert job["job_id"] in driver.seen and job["cpus"] == 1 and r["threads"] == 1
        assert job["gpus"] in ("0", "1") and r["cuda_visible_devices"] == job["gpus"]  # its own GPU, named
        assert r["device"] == f"cuda:{job['gpus']}" and r["torch_device"] == "cpu"  # BENCH_SIMULATE_GPU
        assert f"@slurm{job['job_id']}#" in r["slot"]
        gpus.setdefault(job["job_id"], set()).add(job["gpus"])
    assert all(len(g) == 1 for g in gpus.values()), f"a worker job used several GPUs: {gpus}"


def test_ctrl_c_stops_the_sweep_with_exit_130_and_cancels_the_worker_jobs(tmp_path):
    spec = slurm_spec(tmp_path, n=3, r=3, student_epochs=40, train_subset=600)
    driver = Driver(spec, tmp_path)
    wait_for(
        lambda: (driver.jobs() and ok_records(tmp_path)) or driver.proc.poll() is not None,
        "a distillation record while worker jobs run",
    )
    assert driver.proc.poll() is None, driver.err.read_text()
    name = driver.name()
    driver.proc.send_signal(signal.SIGINT)
    code, err = driver.wait()
    assert code == 130, err
    assert "interrupted by SIGINT" in err
    wait_for(lambda: not [j for j in queue() if j["name"] == name], "the worker jobs to leave the queue", limit=60)


def test_a_worker_job_cancelled_mid_sweep_is_survived(tmp_path):
    """scancel of a running worker job: its jobs are rerun on another worker job; every job ends ok
    once, and the replacement's slots are told apart from the cancelled one's."""
    spec = slurm_spec(tmp_path, n=3, r=3, student_epochs=20, train_subset=600)
    driver = Driver(spec, tmp_path)
    wait_for(lambda: len(ok_records(tmp_path)) >= 5 or driver.proc.poll() is not None, "five records")
    running = [j for j in driver.jobs() if j["state"] == "RUNNING"]
    assert running and driver.proc.poll() is None, driver.err.read_text()
    subprocess.run(["scancel", running[0]["id"]], check=True, timeout=60)
    code, err = driver.wait()
    assert code == 0, err
    got = ok_records(tmp_path)
    assert set(got) == plan_keys(spec)
    assert len({r["provenance"]["slurm"]["job_id"] for r in got.values()}) >= 2
    slots = {}
    for r in got.values():
        slots.setdefault(r["slot"], set()).add(r["provenance"]["slurm"]["job_id"])
    assert all(len(ids) == 1 for ids in slots.values()), f"a slot name shared by worker jobs: {slots}"


def test_a_killed_driver_leaves_no_worker_job_and_a_rerun_finishes(tmp_path):
    """SIGKILL of the driver while a worker job is still pending (4 asked for, 2 cores): the reaper
    cancels pending and running worker jobs; `bench run` again continues from the records."""
    spec = slurm_spec(tmp_path, max_workers=4, n=3, r=3, student_epochs=20, train_subset=600)
    driver = Driver(spec, tmp_path)
    wait_for(
        lambda: any(j["state"] == "PENDING" for j in driver.jobs()) or driver.proc.poll() is not None,
        "a pending worker job",
    )
    assert driver.proc.poll() is None, driver.err.read_text()
    name, pending = driver.name(), {j["id"] for j in driver.jobs() if j["state"] == "PENDING"}
    driver.proc.kill()
    driver.wait()
    started = set()  # without the reaper, a pending worker job starts once the others die, then idles

    def gone() -> bool:
        left = [j for j in queue() if j["name"] == name]
        started.update(j["id"] for j in left if j["id"] in pending and j["state"] in ("RUNNING", "COMPLETING"))
        return not left

    wait_for(gone, "the worker jobs to leave the queue", limit=120)
    assert not started, f"worker jobs {sorted(started)}, pending when the driver died, started after it"
    rerun = bench_cli("run", str(spec), "--no-report", "--quiet", cwd=tmp_path, timeout=800)
    assert rerun.returncode == 0, rerun.stderr
    assert set(ok_records(tmp_path)) == plan_keys(spec)
