"""The local device queue on real (tiny) jobs: slots, GPU slots, errors in the driver. Faults: tests/faults/."""

import json
import time

import pytest
from helpers import bench_cli, digits_spec, records

from bench.core.config import parse_device
from bench.core.contracts import JobPaths, JobPayload
from bench.engines.queue import Item, Worker, make_slots, run_queue, spawn_workers
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep


def test_slots_and_their_environment():
    slots = make_slots(("cuda:0", "cuda:1"), 2, 3)
    assert [s.name for s in slots] == ["cuda:0#0", "cuda:0#1", "cuda:1#0", "cuda:1#1"]
    env = slots[2].env()
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["BENCH_DEVICE"] == "cuda:1"
    assert env["OMP_NUM_THREADS"] == "3"
    assert make_slots(("cpu",), 2)[0].env()["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(ValueError):
        parse_device("cuda")


def test_simulated_gpu_slots(project):
    spec = digits_spec(project, n=2, r=2)
    proc = bench_cli(
        "run",
        str(spec),
        "--no-report",
        "--devices",
        "cuda:0,cuda:1",
        "--jobs-per-device",
        "2",
        cwd=project,
        env={"BENCH_SIMULATE_GPU": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    recs = list(records(project / "results" / "tiny").values())
    assert {r["device"] for r in recs} <= {"cuda:0", "cuda:1"}
    for r in recs:
        assert r["cuda_visible_devices"] == r["device"].split(":")[1]
        assert r["slot"].startswith(r["device"] + "#")
    meta = json.loads(next((project / "teachers" / "digits").glob("*/meta.json")).read_text())
    assert meta["device"].startswith("cuda:")


def test_gpu_slot_without_gpu_is_a_clear_error(project):
    spec = digits_spec(project, n=1, r=1)
    proc = bench_cli("run", str(spec), "--devices", "cuda:0", cwd=project, env={"BENCH_SIMULATE_GPU": "0"})
    assert proc.returncode == 2
    # refused before the lock (bench/driver/preflight.py): one line, nothing written
    assert "field '--devices': cuda:0 requested but torch" in proc.stderr and "sees 0 CUDA device(s)" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (project / "results").exists()


def test_unexpected_errors_cost_one_attempt_and_never_hang(tmp_path):
    """A payload the driver cannot send and a job the worker cannot run: both are retried,
    reported as final failures, and the queue ends."""
    import threading

    failures, out = [], {}
    paths = JobPaths(teachers=str(tmp_path), cache=str(tmp_path))

    def payload(kind: str, key: str, config: dict) -> JobPayload:
        return JobPayload(kind=kind, key=key, config=config, paths=paths, threads=1, deterministic=False, plan={})

    items = [
        Item(key="unsendable", kind="distill", payload=payload("distill", "unsendable", {"bad": object()})),
        Item(key="unknown", kind="nope", payload=payload("nope", "unknown", {})),
    ]
    slots = make_slots(("cpu",), 1, 1)

    def go():
        out["result"] = run_queue(
            items,
            slots,
            tmp_path,
            retries=1,
            timeout=0,
            max_jobs_per_worker=0,
            on_final_failure=failures.append,
            progress=lambda c: None,
        )

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout=800)  # a hang guard, not a speed limit
    assert not t.is_alive(), "the queue hung"
    result = out["result"]
    assert sorted(i.key for i in result.failed) == ["unknown", "unsendable"] and not result.done
    assert {i.key: i.attempts for i in failures} == {"unsendable": 2, "unknown": 2}
    errors = {i.key: i.errors for i in failures}
    assert all("TypeError" in e for e in errors["unsendable"])  # not JSON serializable
    assert all("ValueError: job payload: field 'kind' has an unexpected value 'nope'" in e for e in errors["unknown"])


def test_workers_spawned_early_run_the_jobs_and_the_clock_starts_at_their_spawn(tmp_path, monkeypatch):
    """``spawn_workers`` starts a slot's process before the queue exists (the driver plans
    meanwhile); ``run_queue`` sends the jobs to that very process, counts its start-up in the
    run's wall time, and ends it."""
    slots = make_slots(("cpu",), 1, 1)
    spawned = spawn_workers(slots, tmp_path)
    worker = spawned[slots[0].name]
    pid, used = worker.proc.pid, []
    real_run = Worker.run
    monkeypatch.setattr(Worker, "run", lambda self, *a, **k: used.append(self.proc.pid) or real_run(self, *a, **k))
    time.sleep(0.5)  # the driver's planning
    paths = JobPaths(teachers=str(tmp_path), cache=str(tmp_path))
    payload = JobPayload(kind="nope", key="k", config={}, paths=paths, threads=1, deterministic=False, plan={})
    result = run_queue(
        [Item(key="k", kind="nope", payload=payload)],
        slots,
        tmp_path,
        0,
        0,
        0,
        lambda i: None,
        lambda c: None,
        spawned=spawned,
    )
    assert used == [pid] and [i.key for i in result.failed] == ["k"]
    assert result.wall >= 0.5 and worker.proc is None  # its start-up is in the run's clock; it was stopped


def test_a_run_with_nothing_to_do_ends_the_workers_it_spawned(project, monkeypatch):
    """A finished sweep run again: the workers spawned while it planned are ended, none left behind."""
    import bench.driver.run as driver

    spec = digits_spec(project, n=1, r=1)
    assert bench_cli("run", str(spec), "--no-report", "--quiet", cwd=project).returncode == 0
    seen: list = []
    real = driver.early_workers
    monkeypatch.setattr(driver, "early_workers", lambda run, log_dir: seen.append(real(run, log_dir)) or seen[-1])
    summary = driver.run_sweep(make_plan(load_sweep(spec)), quiet=True)
    assert summary.jobs_run == 0 and len(seen) == 1 and len(seen[0]) == 2
    assert all(w.proc is None or w.proc.poll() is not None for w in seen[0].values())
