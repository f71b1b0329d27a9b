"""Spec composition and command-line settings: `extends` deep-merges a base spec, `--set` changes
one value before validation, and `bench run` keeps the spec it used as results/<sweep>/spec.toml,
from which `bench report` works in any folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO, bench_cli, digits_spec

from bench.core.errors import SpecError
from bench.plan.jobs import make_plan
from bench.spec.compose import apply_sets, dump_toml, read_document, tomllib
from bench.spec.load import load_sweep

SPECS = sorted(REPO.glob("sweeps/**/*.toml"))


def _keys(sweep) -> list[str]:
    return sorted(j.key for j in make_plan(sweep).jobs)


def test_extends_merges_tables_key_by_key(project):
    base = digits_spec(project, name="base", n=3)
    variant = project / "variant.toml"
    variant.write_text('extends = "base.toml"\nname = "variant"\n\n[method]\nalpha = 0.3\n')
    doc = read_document(variant)
    assert doc["name"] == "variant" and "extends" not in doc
    assert doc["method"] == {**read_document(base)["method"], "alpha": 0.3}  # merged, not replaced
    assert doc["teacher"] == read_document(base)["teacher"]
    sweep = load_sweep(variant)
    assert sweep.method.params["alpha"] == 0.3 and sweep.teachers == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('extends = "missing.toml"', "field 'extends': expected an existing spec file, got 'missing.toml'"),
        ('extends = "self.toml"', "field 'extends': expected no cycle"),
        ("extends = 3", "field 'extends': expected the path of a base spec"),
    ],
)
def test_a_bad_extends_is_one_line_naming_the_file(project, text, expected):
    spec = project / "self.toml"
    spec.write_text(text + '\nname = "x"\n')
    proc = bench_cli("plan", str(spec), cwd=project)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "self.toml" in proc.stderr and expected in proc.stderr


def test_set_changes_values_before_validation(project):
    spec = digits_spec(project, n=3, r=1)
    sweep = load_sweep(spec, ("teachers=2", "method.alpha=0.25", "k=[1]", "student.params.hidden=[4]"))
    assert (sweep.teachers, sweep.k, sweep.method.params["alpha"]) == (2, (1,), 0.25)
    assert sweep.student.params == {"hidden": [4]}
    assert apply_sets({"task": {"name": "cola"}}, ["task.data=../glue"])["task"]["data"] == "../glue"  # a string
    proc = bench_cli("plan", str(spec), "--set", "teacher.epohcs=3", cwd=project)
    assert proc.returncode == 2 and "field 'teacher.epohcs': unknown key (did you mean 'epochs'?)" in proc.stderr
    with pytest.raises(SpecError, match="expected KEY.PATH=VALUE"):
        apply_sets({}, ["teachers"])


@pytest.mark.parametrize("spec", SPECS, ids=[str(s.relative_to(REPO)) for s in SPECS])
def test_every_shipped_spec_survives_being_written_back(spec):
    doc = read_document(spec)
    assert tomllib.loads(dump_toml(doc, "a header\nof two lines")) == doc


def test_paper_variants_extend_their_base_and_keep_their_keys(monkeypatch):
    monkeypatch.chdir(REPO)
    variant = REPO / "sweeps" / "paper" / "sst2-tinybert.toml"
    assert tomllib.loads(variant.read_text())["extends"] == "cola-tinybert.toml"
    sweep = load_sweep(variant)
    assert (sweep.task.name, sweep.task.max_length, sweep.augment.per_repeat) == ("sst2", 64, False)


@pytest.mark.timeout(900)
def test_run_keeps_its_spec_and_report_works_from_it_anywhere(project, tmp_path):
    digits_spec(project, name="base", n=2)
    (project / "tiny.toml").write_text('extends = "base.toml"\nname = "tiny"\n')
    proc = bench_cli("run", "tiny.toml", "--no-report", "--quiet", "--set", "repeats=2", "--retries", "0", cwd=project)
    assert proc.returncode == 0, proc.stderr
    saved = project / "results" / "tiny" / "spec.toml"
    doc = tomllib.loads(saved.read_text())
    assert "extends" not in doc and doc["repeats"] == 2 and doc["run"]["retries"] == 0
    assert all(Path(p).is_absolute() for p in doc["paths"].values())
    assert "--set repeats=2" in saved.read_text().splitlines()[0]
    original = load_sweep(project / "tiny.toml", ("repeats=2",))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _keys(load_sweep(saved)) == _keys(original)
    rep = bench_cli("report", str(project / "results" / "tiny"), cwd=elsewhere)
    assert rep.returncode == 0, rep.stderr
    assert (project / "reports" / "tiny" / "report.md").exists() and not (elsewhere / "reports").exists()
    summary = (project / "reports" / "tiny" / "summary_by_k.csv").read_text().splitlines()
    assert len(summary) == 3  # a header and k = 1, 2
