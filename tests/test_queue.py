"""The local device queue on real (tiny) jobs: slots, GPU slots, errors in the driver. Faults: tests/faults/."""

import json

import pytest
from helpers import bench_cli, digits_spec, records

from bench.core.config import parse_device
from bench.core.contracts import JobPaths, JobPayload
from bench.engines.queue import Item, make_slots, run_queue


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
