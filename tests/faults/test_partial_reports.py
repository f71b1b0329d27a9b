"""`bench report` (and so the end of `bench run`) on partial sweeps: deleted, failed, diverged and
skipped runs, a k or a grid point without an ok run, only teachers, no records, a run still
going. Each gives a report, never a traceback, with statistics where the data allow and every
gap named in report.md."""

import fcntl
import json
import shutil

import pandas as pd
import pytest
from helpers import bench_cli, copy_of, digits_spec, finished_sweep

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished sweep (N=3, r=3, no report), copied by each test."""
    return finished_sweep(tmp_path_factory.mktemp("finished"), n=3, r=3)


@pytest.fixture
def sweep(finished, tmp_path, monkeypatch):
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    spec = folder / "tiny.toml"
    return folder, spec, make_plan(load_sweep(spec))


def _record(folder, key):
    return folder / "results" / "tiny" / "records" / f"{key}.json"


def _unscore(folder, job, status, error):
    path = _record(folder, job.key)
    rec = json.loads(path.read_text())
    rec.update(status=status, score=None, scores=None, timings=None, error=error, errors=[error])
    rec.pop("predictions")
    path.write_text(json.dumps(rec))


def _report(folder, spec, *args):
    proc = bench_cli("report", str(spec), *args, cwd=folder)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return (folder / "reports" / "tiny" / "report.md").read_text()


def test_deleting_one_record_of_a_finished_sweep_names_the_gap(sweep):
    # the originally reported failure: one cell then has 2 runs where the size-matched m=3 needs 3
    folder, spec, plan = sweep
    victim = next(j for j in plan.jobs if j.k == 2)
    _record(folder, victim.key).unlink()
    combo = "-".join(map(str, victim.combination))
    md = _report(folder, spec)
    assert f"combination {combo} at k=2: 2 of 3 runs ok (1 missing)" in md
    assert f"1 cell(s) have fewer than m=3 ok runs and are left out (1 at k=2 ({combo}: 2 ok))" in md
    assert "## Verdict" in md and "95% CI of the gain" in md  # the rest is still computed
    cov = pd.read_csv(folder / "reports" / "tiny" / "coverage.csv")
    assert int(cov["missing"].sum()) == 1 and int(cov["ok"].sum()) == len(plan.jobs) - 1
    assert _report(folder, spec, "--m", "2").count("incomplete") == 1  # with m=2 the cell counts again


@pytest.mark.parametrize("case", ["no-k1", "k1-failed", "one-ok-run", "all-diverged", "zero-records"])
def test_a_report_of_any_partial_sweep_names_what_is_missing(sweep, case):
    folder, spec, plan = sweep
    k1 = [j for j in plan.jobs if j.k == 1]
    if case == "no-k1":
        for j in k1:
            _record(folder, j.key).unlink()
    elif case == "k1-failed":
        for j in k1:
            _unscore(folder, j, "failed", "RuntimeError: boom")
    elif case == "one-ok-run":
        for j in plan.jobs[1:]:
            _record(folder, j.key).unlink()
    elif case == "all-diverged":
        for j in plan.jobs:
            _unscore(folder, j, "diverged", "diverged: non-finite loss at step 3")
    else:
        shutil.rmtree(folder / "results")
    md = _report(folder, spec)
    assert "## Coverage" in md and "could not be computed" not in md
    if case == "no-k1":
        assert "No ok run at k=1: no statistic at this k" in md and "No contrast" in md
        assert "combination 0 at k=1: 0 of 3 runs ok (3 missing)" in md
    elif case == "k1-failed":
        assert "No ok run at k=1" in md and "combination 2 at k=1: 0 of 3 runs ok (3 failed)" in md
    elif case == "one-ok-run":
        assert "No ok run at k=2" in md and "No ok run at k=3" in md and "1 ok" in md
        assert "extremes of m=1 runs (the repeats that have an ok run), not of r=3" in md
    elif case == "all-diverged":
        assert f"{len(plan.jobs)} diverged (no score)" in md and "0 of 3 runs ok (3 diverged)" in md
    else:
        assert "No run is recorded yet" in md and "0 ok" in md and f"{len(plan.jobs)} missing" in md


def test_an_empty_grid_point_is_named_and_the_other_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = digits_spec(tmp_path, name="tiny", n=2, r=1, extra="[grid]\ntemperature = [1.0, 2.0]\n")
    plan = make_plan(load_sweep(spec))
    hot = [j.key for j in plan.jobs if j.grid["temperature"] == 2.0]
    proc = bench_cli("run", str(spec), cwd=tmp_path, env={"BENCH_RAISE_ON": ",".join(hot)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr.split("report:")[-1]
    assert "report: " in proc.stderr  # bench run ended with its report
    md = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert "No ok run at temperature=2: no statistic at this grid point" in md
    assert "(1 failed)" in md and "## Verdict" in md


def test_a_failed_teacher_is_named_with_the_runs_it_cost(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = digits_spec(tmp_path, n=3, r=1)
    plan = make_plan(load_sweep(spec))
    teacher = plan.teachers[0]
    proc = bench_cli("run", str(spec), cwd=tmp_path, env={"BENCH_RAISE_ON": teacher.key})
    assert proc.returncode == 1 and "report: " in proc.stderr
    md = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    cost = sum(teacher.key in j.teacher_keys for j in plan.jobs)
    assert f"{cost} run(s) were not run because teacher 0 ({teacher.key}) failed: RuntimeError: injected fault" in md
    assert f"teacher(s) not stored (not trained yet, or their training failed): 0 ({teacher.key})" in md
    assert "No ok run at k=3" in md


def test_a_report_of_teachers_only_and_of_a_sweep_still_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = digits_spec(tmp_path, n=2, r=1)
    assert bench_cli("run", str(spec), "--teachers-only", "--no-report", cwd=tmp_path).returncode == 0
    lock = tmp_path / "results" / "tiny" / ".lock"
    with open(lock, "a+") as f:  # a bench run of the sweep holds its lock
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write(json.dumps({"pid": 4242, "host": "h", "started": 0.0, "command": "bench run tiny.toml"}) + "\n")
        f.flush()
        md = _report(tmp_path, spec)
    assert "A `bench run` of this sweep is running (pid 4242 on h" in md
    assert "No run is recorded yet" in md and "## Teachers" in md
    assert not (tmp_path / "reports" / "tiny" / "by_k.png").exists()
