"""Typed contracts: the job payload crosses process boundaries as JSON and comes back the same;
a payload of another format or with a wrong field is refused with one line, also by a real
worker process; records are written stamped with their format and checked first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import digits_spec

from bench.core.contracts import PAYLOAD_FORMAT, JobPaths, JobPayload
from bench.core.records import RECORD_FORMAT, schema_problem, write_record
from bench.driver.run import distill_payload, teacher_payload
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep


def _plan(project):
    return make_plan(load_sweep(digits_spec(project, n=2, r=1)))


def test_a_payload_survives_the_wire_and_keeps_its_types(project):
    plan = _plan(project)
    for p in (teacher_payload(plan, plan.teachers[0]), distill_payload(plan, plan.jobs[0])):
        sent = p.dispatched(2, "cpu#1", "cpu", 0.25)
        back = JobPayload.from_wire(json.loads(json.dumps(sent.to_wire())))
        assert back == sent and isinstance(back.paths, JobPaths) and back.format == PAYLOAD_FORMAT
    d = distill_payload(plan, plan.jobs[0])
    assert d.record_path.endswith(f"{d.key}.json") and d.plan["k"] == 1 and d.plan["sweep"] == "tiny"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"format": 1},
            f"job payload format 1, this worker reads {PAYLOAD_FORMAT}: the driver and the worker run different",
        ),
        ({"threads": "2"}, "field 'threads' has an unexpected value '2'"),
        ({"kind": "train"}, "field 'kind' has an unexpected value 'train'"),
        ({"extra": 1}, "unknown fields ['extra']"),
        ({"paths": {"teachers": "/t"}}, "field 'paths' has an unexpected value"),
    ],
)
def test_a_wrong_payload_is_refused_naming_what_is_wrong(project, change, expected):
    wire = {**teacher_payload(_plan(project), _plan(project).teachers[0]).to_wire(), **change}
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        JobPayload.from_wire(wire)


def test_a_worker_of_another_version_fails_the_job_saying_why(project):
    """A real bench.engines.worker process sent a payload of another format replies 'failed' with
    the reason (the job costs one attempt), instead of dying on a missing key."""
    plan = _plan(project)
    wire = {**teacher_payload(plan, plan.teachers[0]).to_wire(), "format": 99}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.engines.worker"],
        input=json.dumps(wire) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BENCH_DEVICE": "cpu", "BENCH_THREADS": "1"},
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["ready"] and lines[1] == {"started": wire["key"]}
    assert (
        lines[2]["status"] == "failed"
        and f"job payload format 99, this worker reads {PAYLOAD_FORMAT}" in lines[2]["error"]
    )


def test_records_are_written_stamped_and_checked(project, tmp_path):
    plan = _plan(project)
    job = plan.jobs[0]
    rec = {
        "key": job.key, "sweep": "tiny", "status": "skipped", "attempts": 0, "error": "not run", "k": job.k,
        "combination": list(job.combination), "primary": None, "repeat": 0, "grid": {},
        "teacher_keys": list(job.teacher_keys), "config": job.config, "metric": "accuracy", "scores": None,
        "score": None, "timings": None,
    }  # fmt: skip
    written = write_record(tmp_path / "r.json", rec)
    assert written["record_format"] == RECORD_FORMAT == json.loads((tmp_path / "r.json").read_text())["record_format"]
    assert schema_problem(written) is None and schema_problem(rec) is None  # records from before the stamp still read
    assert "record_format" in schema_problem({**written, "record_format": 2})
    with pytest.raises(ValueError, match="refusing to write the record"):
        write_record(tmp_path / "bad.json", {**rec, "k": 3})
    assert not (tmp_path / "bad.json").exists()
