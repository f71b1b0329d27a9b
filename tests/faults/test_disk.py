"""Damage on disk: truncated or corrupt records and teacher checkpoints are detected, moved to a
quarantine and redone; a full disk (the kernel's file size limit, EFBIG) never leaves a partial
record or teacher visible. After each, the records equal the plan exactly."""

import json
import resource
import signal
import subprocess
import sys

import pytest
from helpers import bench_cli, digits_spec, records

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)  # a hang guard, not a speed limit


def _complete(project, spec):
    plan = make_plan(load_sweep(spec))
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in recs.values())
    return recs


def test_truncated_and_corrupt_records_are_quarantined_and_rerun(project):
    spec = digits_spec(project, n=2, r=2)
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    before = _complete(project, spec)
    folder = project / "results" / "tiny" / "records"
    files = sorted(folder.glob("*.json"))
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated
    files[1].write_bytes(b"\x00\xff" * 20)  # garbage
    files[2].write_text(json.dumps({"key": "someone-else", "status": "ok"}))  # not this job's record
    doctor = bench_cli("doctor", str(spec), cwd=project)
    assert "3 damaged records" in doctor.stdout and "run 3 jobs" in doctor.stdout
    proc = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("moved to") == 3 and "ran 3 jobs (3 ok" in proc.stderr
    after = _complete(project, spec)
    assert {k: r["score"] for k, r in after.items()} == {k: r["score"] for k, r in before.items()}
    assert len(list((project / "results" / "tiny" / "quarantine").iterdir())) == 3


@pytest.mark.parametrize("damage", ["truncate-outputs", "flip-weights", "delete-outputs", "corrupt-meta"])
def test_a_damaged_teacher_is_quarantined_and_trained_again(project, damage):
    spec = digits_spec(project, n=2, r=1)
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    before = _complete(project, spec)
    plan = make_plan(load_sweep(spec))
    folder = project / "teachers" / "digits" / plan.teachers[1].key
    if damage == "truncate-outputs":
        data = (folder / "outputs.npz").read_bytes()
        (folder / "outputs.npz").write_bytes(data[: len(data) // 2])
    elif damage == "flip-weights":
        data = bytearray((folder / "model.safetensors").read_bytes())
        data[-5] ^= 0xFF  # same size, one weight altered
        (folder / "model.safetensors").write_bytes(bytes(data))
    elif damage == "delete-outputs":
        (folder / "outputs.npz").unlink()
    else:
        (folder / "meta.json").write_text("{not json")
    for job in plan.jobs:  # forget the dependants' records, so that the teacher is needed again
        if plan.teachers[1].key in job.teacher_keys:
            (project / "results" / "tiny" / "records" / f"{job.key}.json").unlink()
    proc = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert f"teacher {plan.teachers[1].key}:" in proc.stderr and "it is trained again" in proc.stderr
    assert "trained 1 teachers" in proc.stderr
    after = _complete(project, spec)
    assert {k: r["score"] for k, r in after.items()} == {k: r["score"] for k, r in before.items()}  # deterministic
    quarantined = list((project / "teachers" / "digits" / ".quarantine").iterdir())
    assert len(quarantined) == 1 and (quarantined[0] / "QUARANTINED.txt").is_file()


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_while_writing_leaves_no_partial_file(tmp_path):
    target = tmp_path / "records" / "abc.json"
    code = (
        "import sys\nfrom bench.core.files import atomic_write_bytes\n"
        "try:\n    atomic_write_bytes(sys.argv[1], b'x' * 1_000_000)\nexcept OSError as e:\n"
        "    print(e.errno)\n    sys.exit(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(target)], capture_output=True, text=True, preexec_fn=_limit_file_size(50_000)
    )
    assert proc.returncode == 3, proc.stderr
    assert int(proc.stdout) == 27  # EFBIG: the file size limit, as ENOSPC would be for a full disk
    assert not target.exists() and list(target.parent.iterdir()) == []  # no partial record, no temp file


def test_a_sweep_on_a_full_disk_writes_no_partial_teacher_and_resumes(project):
    spec = digits_spec(project, n=2, r=1)
    plan = make_plan(load_sweep(spec))
    from bench.tasks.table import TASKS

    TASKS["digits"].load(plan.sweep.task, project / ".cache" / "bench")  # the data cache exists: teachers hit the limit
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(spec), "--no-report", "--quiet"],
        cwd=project,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(16_000),
        timeout=800,
    )
    assert proc.returncode == 1, proc.stderr
    assert "File too large" in proc.stderr
    teachers = project / "teachers" / "digits"
    assert not [p for p in teachers.iterdir() if not p.name.startswith(".")]  # no teacher became visible
    recs = records(project / "results" / "tiny")
    assert set(recs) == {j.key for j in plan.jobs} and {r["status"] for r in recs.values()} == {"skipped"}
    rerun = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    _complete(project, spec)
    assert not [p for p in teachers.iterdir() if p.name.startswith(".") and "tmp" in p.name]  # temps cleaned
    assert not list((project / "results" / "tiny" / "records").glob(".*"))
