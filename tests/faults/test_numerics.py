"""The numerics version (`bench.core.numerics`) changes scores under unchanged keys: every record
(ok or not) and teacher meta holds it as `numerics`, and resuming results of another version, or
of none (made before the field existed: unknown), is refused before any job runs (one line, exit
code 2) unless `--mixed-numerics`; a report reads them all."""

from __future__ import annotations

import json

import pytest
from helpers import bench_cli, digits_spec, records

from bench.core.numerics import NUMERICS_VERSION
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)


def _metas(project):
    return sorted((project / "teachers" / "digits").glob("*/meta.json"))


def test_every_record_and_teacher_holds_the_numerics_version(project):
    spec = digits_spec(project, n=2, r=1, run="retries = 0")
    plan = make_plan(load_sweep(spec))
    victim = plan.jobs[0].key
    proc = bench_cli("run", str(spec), "--no-report", cwd=project, env={"BENCH_RAISE_ON": victim})
    assert proc.returncode == 1, proc.stderr
    recs = records(project / "results" / "tiny")
    assert recs[victim]["status"] == "failed"  # written by the driver, not the worker
    assert {r["numerics"] for r in recs.values()} == {NUMERICS_VERSION}
    assert [json.loads(p.read_text())["numerics"] for p in _metas(project)] == [NUMERICS_VERSION] * 2


def _restamp(path, version):
    """The record or meta.json at ``path`` as made by a bench of numerics ``version`` (None: before the field)."""
    obj = json.loads(path.read_text())
    obj.pop("numerics", None)
    if version is not None:
        obj["numerics"] = version
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("version", [None, NUMERICS_VERSION + 1])
def test_resuming_results_of_another_numerics_version_is_refused_unless_asked(project, version):
    spec = digits_spec(project, n=2, r=1)
    plan = make_plan(load_sweep(spec))
    results = project / "results" / "tiny"
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    gone = plan.jobs[0].key
    (results / "records" / f"{gone}.json").unlink()  # one job left to do
    for path in [*(results / "records").glob("*.json"), *_metas(project)]:
        _restamp(path, version)
    before = sorted(p.name for p in project.rglob("*"))
    refused = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert refused.returncode == 2
    made = "unknown" if version is None else version
    why = " (unknown: made before records and teachers held it)" if version is None else ""
    assert refused.stderr.strip().splitlines() == [
        f"error: {spec}: field 'numerics': expected the numerics version of this bench ({NUMERICS_VERSION}) in the "
        f"results this run resumes, got numerics {made}: {len(plan.jobs) - 1} records, 2 teachers{why}; scores "
        f"depend on it, so resume with the bench that made them, or pass --mixed-numerics to resume with numerics "
        f"{NUMERICS_VERSION} anyway"
    ], refused.stderr
    assert sorted(p.name for p in project.rglob("*")) == before  # nothing ran, nothing written
    report = bench_cli("report", str(spec), cwd=project)  # results of any version are reported
    assert report.returncode == 0, report.stderr
    mixed = bench_cli("run", str(spec), "--no-report", "--mixed-numerics", cwd=project)
    assert mixed.returncode == 0 and "ran 1 jobs" in mixed.stderr, mixed.stderr
    assert records(results)[gone]["numerics"] == NUMERICS_VERSION
    nothing_to_do = bench_cli("run", str(spec), "--no-report", cwd=project)  # no job runs: nothing to refuse
    assert nothing_to_do.returncode == 0, nothing_to_do.stderr


def test_a_new_sweep_on_teachers_of_another_version_is_refused_too(project):
    """Stored teachers count as a sweep's results: students of new numerics distilled from teachers of
    unknown numerics would mix the two in every record."""
    spec = digits_spec(project, n=2, r=1)
    assert bench_cli("run", str(spec), "--no-report", "--teachers-only", cwd=project).returncode == 0
    for path in _metas(project):
        _restamp(path, None)
    refused = bench_cli("run", str(spec), "--no-report", cwd=project)
    assert refused.returncode == 2 and "got numerics unknown: 0 records, 2 teachers" in refused.stderr
    assert not (project / "results" / "tiny" / "records").exists() or not records(project / "results" / "tiny")
    assert bench_cli("run", str(spec), "--no-report", "--mixed-numerics", cwd=project).returncode == 0


def test_bench_rerun_says_when_a_record_is_of_another_numerics_version(project):
    spec = digits_spec(project, n=2, r=1)
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    record = sorted((project / "results" / "tiny" / "records").glob("*.json"))[0]
    same = bench_cli("rerun", str(record), cwd=project)
    assert same.returncode == 0 and "bit for bit" in same.stdout and "numerics" not in same.stdout
    _restamp(record, None)
    old = bench_cli("rerun", str(record), cwd=project)
    assert old.returncode == 0, old.stderr  # same code: the same scores, whatever the record says
    assert (
        f"note: the record was made with numerics unknown, this bench computes numerics {NUMERICS_VERSION}"
        in old.stdout
    )
