"""Where things go: every relative path of a spec resolves from one stated place, the project root
(the nearest folder from the spec's up holding bench.toml, pyproject.toml or .git, else the
spec's folder, or ``paths.root``), never from the current directory; so `bench plan`, `run` and
`report` give the same sweep, the same keys and the same files from any folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import GLUE, bench_cli, digits_spec, records

from bench.core.config import project_root
from bench.core.errors import SpecError
from bench.plan.jobs import make_plan
from bench.spec.compose import tomllib
from bench.spec.load import load_sweep

GLUE_SPEC = """
name = "glue-paths"
teachers = 2

[task]
name = "cola"
data = "data/glue"
tokenizer = "all-minilm-l6-v2"
train_subset = 40
eval_subset = 20

[teacher]
model = "bert"
params = { hidden_size = 8, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 8 }

[student]
model = "bert"
params = { hidden_size = 8, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 8 }
seed = 100
"""


def _project(tmp_path: Path) -> tuple[Path, Path]:
    """A project (marked by bench.toml) with its specs one folder down and its data beside them."""
    root = tmp_path / "project"
    (root / "specs").mkdir(parents=True)
    (root / "bench.toml").write_text("")
    (root / "data").mkdir()
    (root / "data" / "glue").symlink_to(GLUE)
    (root / "specs" / "glue.toml").write_text(GLUE_SPEC)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return root, elsewhere


def test_the_root_is_the_nearest_marked_folder_else_the_spec_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert project_root(tmp_path / "a" / "b" / "s.toml") == tmp_path / "a" / "b"  # no marker: the spec's folder
    (tmp_path / "a" / "pyproject.toml").write_text("")
    assert project_root(tmp_path / "a" / "b" / "s.toml") == tmp_path / "a"
    (tmp_path / "a" / "b" / ".git").mkdir()
    assert project_root(tmp_path / "a" / "b" / "s.toml") == tmp_path / "a" / "b"  # the nearest wins


def test_a_spec_gives_the_same_sweep_and_keys_from_any_folder(tmp_path, monkeypatch):
    root, elsewhere = _project(tmp_path)
    spec = root / "specs" / "glue.toml"
    monkeypatch.chdir(root)
    here = load_sweep(spec)
    monkeypatch.chdir(elsewhere)
    there = load_sweep(spec)
    assert here == there and there.task.data == "data/glue"  # as written: it is in the keys
    assert [j.key for j in make_plan(here).jobs] == [j.key for j in make_plan(there).jobs]
    assert there.results_dir() == root / "results" / "glue-paths" and there.locate("data/glue") == str(
        root / "data/glue"
    )
    assert Path(there.paths.teachers) == root / "teachers" and Path(there.paths.cache) == root / ".cache" / "bench"
    moved = load_sweep(spec, ("paths.results=out", "paths.reports=/abs/reports"))  # --set: from the root too
    assert moved.results_dir() == root / "out" / "glue-paths" and moved.reports_dir() == Path("/abs/reports/glue-paths")
    stated = load_sweep(spec, ("paths.root=..",))  # relative to the spec's folder
    assert stated.root == str(root) and stated == there


def test_a_missing_data_folder_names_the_root(tmp_path):
    root, elsewhere = _project(tmp_path)
    proc = bench_cli("plan", str(root / "specs" / "glue.toml"), "--set", "task.data=nope", cwd=elsewhere)
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        f"field 'task.data': expected an existing folder, got 'nope' "
        f"(relative paths are taken from the project root {root}" in proc.stderr
    )
    with pytest.raises(SpecError, match="field 'paths.root': expected an existing folder"):
        load_sweep(root / "specs" / "glue.toml", ("paths.root=missing",))
    assert os.listdir(elsewhere) == []


@pytest.mark.timeout(900)
def test_run_and_report_from_other_folders_write_under_the_root_only(tmp_path):
    root = tmp_path / "project"
    (root / "sweeps").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    spec = digits_spec(root / "sweeps", n=2)
    elsewhere, other = tmp_path / "elsewhere", tmp_path / "other"
    elsewhere.mkdir()
    other.mkdir()
    run = bench_cli("run", str(spec), "--no-report", "--quiet", cwd=elsewhere)
    assert run.returncode == 0, run.stderr
    assert f"tiny: project root {root}; records in {root / 'results' / 'tiny'}" in run.stderr
    assert len(records(root / "results" / "tiny")) == 3 and (root / "teachers").is_dir()
    saved = tomllib.loads((root / "results" / "tiny" / "spec.toml").read_text())
    assert saved["paths"]["root"] == str(root)
    for args in (("report", str(spec)), ("report", str(root / "results" / "tiny"))):
        rep = bench_cli(*args, cwd=other)
        assert rep.returncode == 0, rep.stderr
        summary = (root / "reports" / "tiny" / "summary_by_k.csv").read_text().splitlines()
        assert len(summary) == 3  # a header and k = 1, 2: the records were found
    assert os.listdir(elsewhere) == [] and os.listdir(other) == []
    assert sorted(os.listdir(root)) == [".cache", "pyproject.toml", "reports", "results", "sweeps", "teachers"]
