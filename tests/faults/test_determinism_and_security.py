"""Determinism (the same job twice gives bit-identical scores on CPU; `bench rerun` reruns one job
from its record alone) and security (checkpoints only through safetensors or
torch.load(weights_only=True); specs are data; output confined to the configured roots)."""

import ast
import json
import shutil

import pytest
from helpers import REPO, bench_cli, digits_spec, records

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

pytestmark = pytest.mark.timeout(900)  # a hang guard, not a speed limit


def test_the_same_jobs_twice_give_bit_identical_scores(tmp_path):
    scores = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        spec = digits_spec(folder, n=3, r=2)
        assert bench_cli("run", str(spec), "--no-report", cwd=folder).returncode == 0
        scores.append({k: r["scores"] for k, r in records(folder / "results" / "tiny").items()})
    assert scores[0] == scores[1]  # dict equality of floats: bit for bit


def test_bench_rerun_reruns_one_job_from_its_record_alone(project, tmp_path):
    spec = digits_spec(project, n=2, r=1)
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    record = sorted((project / "results" / "tiny" / "records").glob("*.json"))[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / record.name
    shutil.copy(record, copy)  # the record alone, in a folder without the spec
    proc = bench_cli("rerun", str(copy), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "every score identical, bit for bit" in proc.stdout
    assert json.loads(copy.read_text()) == json.loads(record.read_text())  # not replaced
    by_key = bench_cli("rerun", record.stem[:8], "--replace", cwd=project)
    assert by_key.returncode == 0 and "the record was replaced" in by_key.stdout
    assert json.loads(record.read_text())["scores"] == json.loads(copy.read_text())["scores"]
    missing = bench_cli("rerun", "ffffffff", cwd=project)
    assert missing.returncode == 2 and "no record found" in missing.stderr
    # made without run.deterministic: the rerun says a GPU need not reproduce it
    assert json.loads(record.read_text())["deterministic"] is False
    assert "made without run.deterministic" in proc.stdout


def test_run_deterministic_is_applied_and_recorded(project):
    spec = digits_spec(project, n=2, r=1, run="deterministic = true\n")
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    recs = records(project / "results" / "tiny")
    assert recs and all(r["deterministic"] is True for r in recs.values())
    record = sorted((project / "results" / "tiny" / "records").glob("*.json"))[0]
    proc = bench_cli("rerun", str(record), cwd=project)
    assert proc.returncode == 0 and "bit for bit" in proc.stdout and "made without" not in proc.stdout


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            base = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, base, name


def test_no_unsafe_loading_or_code_execution_in_the_package():
    problems = []
    for path in sorted((REPO / "bench").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node, base, name in _calls(tree):
            kwargs = {k.arg: k.value for k in node.keywords}
            where = f"{path.name}:{node.lineno}"
            if base == "torch" and name == "load":
                wo = kwargs.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if base == "np" and name == "load":
                ap = kwargs.get("allow_pickle")
                if not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where}: np.load without allow_pickle=False")
            if base in ("pickle", "marshal") and name in ("load", "loads"):
                problems.append(f"{where}: {base}.{name}")
            if isinstance(node.func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}: {name}()")
    assert not problems, problems


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "/abs"])
def test_a_spec_name_cannot_leave_the_output_roots(project, name):
    spec = digits_spec(project)
    spec.write_text(spec.read_text().replace('name = "tiny"', f'name = "{name}"'))
    proc = bench_cli("run", str(spec), cwd=project)
    assert proc.returncode == 2 and "field 'name': expected letters, digits" in proc.stderr
    assert sorted(p.name for p in project.iterdir()) == ["tiny.toml"]


def test_a_run_writes_only_inside_its_configured_roots(project):
    spec = digits_spec(
        project,
        n=2,
        r=1,
        extra="""
        [paths]
        teachers = "out/t"
        results = "out/r"
        reports = "out/p"
        cache = "out/c"
        """,
    )
    assert bench_cli("run", str(spec), cwd=project).returncode == 0
    top = {p.relative_to(project).parts[0] for p in project.rglob("*")}
    assert top == {"tiny.toml", "out"}
    assert {p.relative_to(project / "out").parts[0] for p in (project / "out").rglob("*")} <= {"t", "r", "p", "c"}
    assert len(records(project / "out" / "r" / "tiny")) == len(make_plan(load_sweep(spec)).jobs)
