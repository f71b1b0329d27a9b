"""CLI habits: `bench --version`, `bench ls tasks|models|methods`, fixed choices shown in --help,
exit code 3 for internal errors, as a user meets them (the command as a subprocess)."""

from __future__ import annotations

import re
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from helpers import bench_cli, digits_spec, with_sitecustomize

import bench
from bench.analysis.options import TEACHER_COST_POLICIES
from bench.methods.table import METHODS
from bench.models.builders import MODELS
from bench.spec.load import ENGINE_NAMES
from bench.tasks.table import TASKS


def test_version_is_the_package_metadata(tmp_path):
    proc = bench_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    try:
        expected = version("bench")
    except PackageNotFoundError:  # run from a source tree that is not installed
        expected = bench.__version__
    assert proc.stdout.strip() == f"bench {expected}"


def _lines(proc) -> dict[str, str]:
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return {line.split()[0]: line for line in proc.stdout.splitlines()}


def test_ls_lists_every_entry_on_one_line(tmp_path):
    tasks = _lines(bench_cli("ls", "tasks", cwd=tmp_path))
    assert list(tasks) == list(TASKS)
    assert "image" in tasks["digits"] and "metrics: accuracy" in tasks["digits"] and "8x8 digits" in tasks["digits"]
    assert "metrics: mcc, accuracy" in tasks["cola"] and "[hub] extra" in tasks["cifar10"]
    models = _lines(bench_cli("ls", "models", cwd=tmp_path))
    assert list(models) == list(MODELS)
    assert models["mlp"].split()[1] == "image" and models["mlp"].endswith("params: hidden, dropout")
    assert models["bert"].split()[1] == "text" and "hidden_size" in models["bert"]
    assert models["resnet20"].endswith("params: none")
    methods = _lines(bench_cli("ls", "methods", cwd=tmp_path))
    assert list(methods) == list(METHODS)
    assert "primary: no" in methods["kd"] and "temperature=2, alpha=0.5" in methods["kd"]
    assert "primary: yes" in methods["tinybert"] and "ild_lr" in methods["tinybert"]
    assert METHODS["kd"].doc in methods["kd"]


def test_ls_of_an_unknown_table_names_the_choices(tmp_path):
    proc = bench_cli("ls", "method", cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'method'" in proc.stderr
    assert "'tasks', 'models', 'methods'" in proc.stderr


def test_help_lists_the_choices_of_fixed_options(tmp_path):
    run = bench_cli("run", "--help", cwd=tmp_path)
    assert run.returncode == 0
    assert "--engine {" + ",".join(ENGINE_NAMES) + "}" in run.stdout
    assert "--teacher-cost {" + ",".join(TEACHER_COST_POLICIES) + "}" in run.stdout
    for command in ("report", "compare"):
        assert "{full,amortised,free}" in bench_cli(command, "--help", cwd=tmp_path).stdout
    assert "{tasks,models,methods}" in bench_cli("ls", "--help", cwd=tmp_path).stdout


def test_an_internal_error_is_one_line_exit_3_and_its_traceback_in_a_file(tmp_path):
    """A bug (an exception that is not the user's input) exits 3, not 1 ("some jobs failed"), with
    one line naming the exception and the file holding the whole traceback."""
    spec = digits_spec(tmp_path)
    env = with_sitecustomize(
        tmp_path / "site",
        """
        import bench.plan.jobs

        def make_plan(sweep):
            raise RuntimeError("a bug in planning\\nsecond line")

        bench.plan.jobs.make_plan = make_plan
        """,
    )
    proc = bench_cli("plan", str(spec), cwd=tmp_path, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("internal error: RuntimeError: a bug in planning (full traceback in ")
    path = Path(re.search(r"full traceback in (\S+);", line).group(1))
    try:
        assert path.parent == Path(tempfile.gettempdir())
        text = path.read_text()
        assert f"bench plan {spec}" in text and "Traceback (most recent call last)" in text
        assert "in make_plan" in text and "RuntimeError: a bug in planning\nsecond line" in text
    finally:
        path.unlink()
    # user errors keep exit 2 and no file is written for them
    assert bench_cli("plan", str(tmp_path / "missing.toml"), cwd=tmp_path).returncode == 2
