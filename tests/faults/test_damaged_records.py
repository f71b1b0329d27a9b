"""A record is final only if it is a regular file of bounded size and depth holding a record of the
schema for its status, whose key is its file name, the stable_hash of its own config and a job
of the plan with the same coordinates. Anything else is named by `bench doctor` and `bench
report` (which leave it out) and quarantined and redone by `bench run`; nothing hangs, crashes
or fills memory. Damaged teacher meta.json files are named too."""

import base64
import json
import os
import shutil
import zlib

import pytest
from helpers import bench_cli, copy_of, finished_sweep, records

from bench.core.records import decode_array, record_problem
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(300)


def _drop(field):
    return lambda rec, other: {k: v for k, v in rec.items() if k != field}


def _set(**fields):
    return lambda rec, other: {**rec, **fields}


def _predictions(rec, other):
    return {**rec, "predictions": {"dev": {"dtype": "<i1", "n": 5, "zlib_base64": "AAAA"}}}


def _bomb(rec, other):  # 100 MB of zeros claiming to be 10 predictions
    data = base64.b64encode(zlib.compress(bytes(100_000_000), 9)).decode()
    return {**rec, "predictions": {"dev": {"dtype": "<i1", "n": 10, "zlib_base64": data}}}


# damage -> (edit of the record as JSON, or a file kind, and what the problem line says)
DAMAGE = {
    "score-a-string": (_set(score="0.9"), "field 'score': expected a number, got str"),
    "no-k": (_drop("k"), "field 'k' missing"),
    "timings-null": (_set(timings=None), "field 'timings'"),
    "failed-without-error": (_set(status="failed", score=None, scores=None, error=None), "field 'error'"),
    "ok-with-null-score": (_set(score=None), "field 'score': expected a number, got null"),
    "unknown-status": (_set(status="done"), "field 'status': expected one of ok, failed, diverged, skipped"),
    "another-jobs-record": (lambda rec, other: {**other, "key": rec["key"]}, "its config is not the one of its key"),
    "coordinates-altered": (_set(repeat=7), "field 'repeat' is 7, the plan says"),
    "predictions-corrupt": (_predictions, "field 'predictions.dev': not an encoded array"),
    "predictions-bomb": (_bomb, "field 'predictions.dev'"),
    "deep-nesting": ("deep", "JSON nested deeper than 64 levels"),
    "fifo": ("fifo", "not a regular file"),
    "folder": ("folder", "not a regular file"),
    "symlink-to-dev-zero": ("devzero", "a symbolic link"),
    "huge-file": ("huge", "more than the 16777216 a JSON file"),
}


def _damage(path, how, other):
    if callable(how):
        path.write_text(json.dumps(how(json.loads(path.read_text()), json.loads(other.read_text()))))
        return
    path.unlink()
    if how == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "folder":
        path.mkdir()
    elif how == "devzero":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as f:  # sparse: 1 GB on paper, nothing on disk
            f.truncate(1 << 30)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_sweep(tmp_path_factory.mktemp("finished"), n=2, r=3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(DAMAGE))
def test_record_problem_names_each_damage(finished, tmp_path, name):
    folder = tmp_path / "records"
    shutil.copytree(finished / "results" / "tiny" / "records", folder)
    plan = make_plan(load_sweep(finished / "tiny.toml"))
    job, other = plan.jobs[0], plan.jobs[-1]
    path = folder / f"{job.key}.json"
    assert record_problem(path, job) == (json.loads(path.read_text()), None)  # sound before
    how, says = DAMAGE[name]
    _damage(path, how, folder / f"{other.key}.json")
    rec, problem = record_problem(path, job)
    assert rec is None and says in problem, problem


def test_decoding_predictions_never_inflates_past_what_they_claim():
    data = base64.b64encode(zlib.compress(bytes(50_000_000), 9)).decode()
    with pytest.raises(ValueError, match="expected 10 values, decoded more"):
        decode_array({"dtype": "<i1", "n": 10, "zlib_base64": data})
    with pytest.raises(ValueError):
        decode_array({"dtype": "object", "n": 1, "zlib_base64": ""})


def test_doctor_report_and_run_name_quarantine_and_redo_every_damaged_record(finished, tmp_path, monkeypatch):
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    spec = folder / "tiny.toml"
    plan = make_plan(load_sweep(spec))
    before = records(folder / "results" / "tiny")
    names = [
        "score-a-string",
        "another-jobs-record",
        "coordinates-altered",
        "predictions-corrupt",
        "fifo",
        "symlink-to-dev-zero",
        "huge-file",
        "deep-nesting",
    ]
    victims = plan.jobs[: len(names)]
    for name, job in zip(names, victims):
        _damage(
            folder / "results" / "tiny" / "records" / f"{job.key}.json",
            DAMAGE[name][0],
            folder / "results" / "tiny" / "records" / f"{plan.jobs[-1].key}.json",
        )
    doctor = bench_cli("doctor", str(spec), cwd=folder, timeout=120)
    assert doctor.returncode == 0, doctor.stderr
    assert f"{len(names)} damaged records" in doctor.stdout and f"run {len(names)} jobs" in doctor.stdout
    for name, job in zip(names, victims):
        assert f"damaged record {folder / 'results' / 'tiny' / 'records' / job.key}.json: " in doctor.stdout
        assert DAMAGE[name][1] in doctor.stdout
    report = bench_cli("report", str(spec), cwd=folder, timeout=120)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    md = (folder / "reports" / "tiny" / "report.md").read_text()
    assert f"{len(names)} record file(s) are damaged and left out" in md
    assert all(f"{job.key}.json: " in md for job in victims)
    run = bench_cli("run", str(spec), "--no-report", cwd=folder, timeout=200)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("moved to") == len(names) and f"ran {len(names)} jobs ({len(names)} ok" in run.stderr
    after = records(folder / "results" / "tiny")
    assert set(after) == {j.key for j in plan.jobs} and all(r["status"] == "ok" for r in after.values())
    assert {k: r["score"] for k, r in after.items()} == {k: r["score"] for k, r in before.items()}
    assert len(list((folder / "results" / "tiny" / "quarantine").iterdir())) == len(names)


@pytest.mark.parametrize("meta", ["{x", "{}", "[1]", "no-timings"])
def test_a_damaged_teacher_meta_is_named_by_report_and_doctor(finished, tmp_path, monkeypatch, meta):
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    spec = folder / "tiny.toml"
    plan = make_plan(load_sweep(spec))
    path = folder / "teachers" / "digits" / plan.teachers[1].key / "meta.json"
    if meta == "no-timings":
        meta = json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "timings"})
    path.write_text(meta)
    report = bench_cli("report", str(spec), cwd=folder)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    md = (folder / "reports" / "tiny" / "report.md").read_text()
    assert f"teacher 1 ({plan.teachers[1].key}): meta.json" in md and "left out of the teachers' table" in md
    assert "Against compute" in md and "Not drawn" in md
    doctor = bench_cli("doctor", str(spec), cwd=folder)
    assert f"damaged teacher {plan.teachers[1].key}: meta.json" in doctor.stdout
