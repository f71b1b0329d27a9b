"""Extension without forking: a package installed with an entry point in ``bench.methods`` adds a
distillation method that specs can name (tests/plugin_demo, the example of docs/extending.md);
a broken, mistyped or clashing plugin stops the run with one line naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest
from helpers import REPO, bench_cli, digits_spec, records

from bench.core.errors import UserError
from bench.core.plugins import Table
from bench.methods.table import BUILTIN_METHODS, Method
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """tests/plugin_demo installed as pip installs a package (its dist-info carries the entry point),
    into a folder of its own that the test puts on PYTHONPATH."""
    pytest.importorskip("setuptools")
    site = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = shutil.copytree(REPO / "tests" / "plugin_demo", build / "plugin_demo")  # setuptools builds in place
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=build,
    )
    assert proc.returncode == 0, proc.stderr
    return site


def _env(site) -> dict:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


@pytest.mark.timeout(900)
def test_an_installed_method_plugin_runs_a_sweep(project, plugin_site):
    spec = digits_spec(project, n=2, r=1, method="logit-mse", student_epochs=30)
    env = _env(plugin_site)
    plan = bench_cli("plan", str(spec), cwd=project, env=env)
    assert plan.returncode == 0, plan.stderr
    run = bench_cli("run", str(spec), "--quiet", cwd=project, env=env)
    assert run.returncode == 0, run.stderr
    got = records(project / "results" / "tiny")
    assert len(got) == 3 and all(r["status"] == "ok" for r in got.values())  # k=1: 2 jobs, k=2: 1 job
    for r in got.values():
        assert r["config"]["method"] == {"name": "logit-mse", "params": {"alpha": 0.0}}
        assert r["config"]["loss"].startswith("alpha*CE(y) + (1-alpha)*MSE")
        assert r["score"] > 0.2  # 10 classes: chance is 0.1
    # students of different teachers differ: the method trained on the teachers' logits
    assert len({json.dumps(r["predictions"], sort_keys=True) for r in got.values()}) == 3
    assert (project / "reports" / "tiny" / "report.md").exists()


def test_without_the_plugin_the_spec_is_refused_naming_the_field(project):
    spec = digits_spec(project, method="logit-mse")
    proc = bench_cli("plan", str(spec), cwd=project)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "field 'method.name': unknown method 'logit-mse'" in proc.stderr


def _table(monkeypatch, value: str, name: str = "mine") -> Table:
    eps = [EntryPoint(name=name, value=value, group="bench.methods")]
    monkeypatch.setattr("bench.core.plugins.entry_points", lambda group: eps if group == "bench.methods" else [])
    return Table("bench.methods", Method, BUILTIN_METHODS)


@pytest.mark.parametrize(
    ("value", "name", "expected"),
    [
        ("no_such_module_xyz:METHOD", "mine", "cannot load bench.methods entry 'mine': ModuleNotFoundError"),
        ("os:sep", "mine", "entry 'mine' is a str, expected a bench.methods.table.Method"),
        ("bench.methods.table:BUILTIN_METHODS", "kd", "entry 'kd' clashes with a built-in one"),
    ],
    ids=["broken", "wrong-type", "clash"],
)
def test_a_bad_plugin_is_one_line_naming_it(monkeypatch, value, name, expected):
    table = _table(monkeypatch, value, name)
    with pytest.raises(UserError, match=expected):
        table["kd"]


def test_a_plugin_is_only_loaded_when_a_table_is_read(monkeypatch):
    """Nothing registers on import: the entry points are read once, at the first lookup."""
    calls = []
    monkeypatch.setattr("bench.core.plugins.entry_points", lambda group: calls.append(group) or [])
    table = Table("bench.methods", Method, BUILTIN_METHODS)
    assert calls == []
    assert "kd" in table and list(table)[:1] == ["kd"] and calls == ["bench.methods"]
    make_plan(load_sweep(REPO / "sweeps" / "quickstart.toml"))  # the built-in table still serves plans


def test_bench_ls_methods_lists_an_installed_plugin(tmp_path, plugin_site):
    proc = bench_cli("ls", "methods", cwd=tmp_path, env=_env(plugin_site))
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("logit-mse ")]
    assert "primary: no" in line and "alpha=0" in line
    assert "logit-mse" not in bench_cli("ls", "methods", cwd=tmp_path).stdout  # not installed: not listed
