"""More bad input, refused before any work: one line on stderr naming the file (or path) and the
field, exit code 2, nothing written. Options of `bench run` (report and engine options too), specs
that are resource bombs (huge numbers, giant lists, deep nesting, a FIFO for a file), devices this
machine does not have, and odd states of the output folders."""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import bench_cli, digits_spec

pytestmark = pytest.mark.timeout(120)


def _tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _refused(project, *args, pieces=(), env=None, command="run") -> str:
    before = _tree(project)
    proc = bench_cli(command, *args, cwd=project, env=env, timeout=100)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for piece in pieces:
        assert piece in proc.stderr, proc.stderr
    assert _tree(project) == before  # nothing written: no results, teachers, reports, lock or logs
    return proc.stderr


@pytest.mark.parametrize(
    "option, expected",
    [
        (["--m", "0"], "--m: expected an integer >= 1"),
        (["--m", "9"], "--m: expected at most r=1"),
        (["--level", "1.5"], "--level: expected a confidence level"),
        (["--teacher-cost", "ful"], "--teacher-cost: unknown policy 'ful' (did you mean 'full'?)"),
        (["--base-k", "0"], "--base-k: expected an integer >= 1"),
        (["--base-k", "5"], "--base-k: expected one of the sweep's k (1, 2)"),
        (["--no-report", "--level", "0"], "--level"),
    ],
)
def test_report_options_of_bench_run_are_checked_before_any_work(project, option, expected):
    spec = digits_spec(project, n=2)
    _refused(project, str(spec), "--quiet", *option, pieces=[expected])


@pytest.mark.parametrize(
    "option, expected",
    [
        (["--devices", ""], "'--run.devices[0]': expected 'cpu' or 'cuda:N'"),
        (["--devices", "cpu,"], "'--run.devices[1]': expected 'cpu' or 'cuda:N'"),
        (["--jobs-per-device", "100000"], "'--run.jobs_per_device': expected a value <= 64"),
        (["--retries", "1000000"], "'--run.retries': expected a value <= 100"),
        (["--scheduler", "not-a-file.json"], "'--scheduler': expected a scheduler address tcp://HOST:PORT"),
        (["--scheduler", "tcp://127.0.0.1:1"], "'--scheduler': cannot reach the Dask scheduler"),
    ],
)
def test_run_and_engine_options_are_checked_before_any_work(project, option, expected):
    if "--scheduler" in option:
        pytest.importorskip("distributed")
    spec = digits_spec(project, n=2)
    _refused(project, str(spec), "--quiet", *option, pieces=[expected])


def _torch_sees_a_gpu() -> bool:
    from bench.driver.preflight import gpu_count

    seen = gpu_count()
    return seen is None or seen[0] > 0


@pytest.mark.parametrize("where", ["spec", "option"])
def test_a_gpu_this_machine_lacks_is_refused_before_the_lock(project, where):
    if _torch_sees_a_gpu():
        pytest.skip("torch sees a GPU here")
    env = {k: v for k, v in os.environ.items() if k != "BENCH_SIMULATE_GPU"}
    if where == "spec":
        spec = digits_spec(project, n=2)
        spec.write_text(spec.read_text().replace('devices = ["cpu"]', 'devices = ["cpu", "cuda:0"]'))
        _refused(
            project,
            str(spec),
            "--quiet",
            env=env,
            pieces=["tiny.toml: field 'run.devices[1]': cuda:0 requested but torch", "expected 'cpu'"],
        )
    else:
        spec = digits_spec(project, n=2)
        _refused(
            project,
            str(spec),
            "--quiet",
            "--devices",
            "cuda:1",
            env=env,
            pieces=["command line: field '--devices': cuda:1 requested"],
        )


def test_simulated_gpus_still_pass_the_device_check(project, monkeypatch):
    from bench.driver.preflight import check_devices
    from bench.spec.load import load_sweep, with_run_overrides

    monkeypatch.setenv("BENCH_SIMULATE_GPU", "1")
    sweep = with_run_overrides(load_sweep(digits_spec(project, n=2)), devices=("cuda:0", "cuda:1"))
    check_devices(sweep, frozenset({"devices"}))  # no GPU needed: the tests' fake GPUs run on the CPU


BOMBS = [
    ("teachers = 2", "teachers = 2\nk = []", "field 'k': expected a non-empty list"),
    ('name = "tiny"', f'name = "{"n" * 300}"', "field 'name': expected at most 100 characters"),
    ("teachers = 2", "teachers = 1000000000000", "field 'teachers': expected a value <= 1,000"),
    ("teachers = 2", "teachers = 100000000000000000000000", "field 'teachers': expected an integer of magnitude"),
    ("teachers = 2", "teachers = 200\nk = [100]", "field 'teachers': expected a plan of at most 1,000,000 jobs"),
    ("repeats = 1", "repeats = 1000000000", "field 'repeats': expected a value <= 10,000"),
    ("jobs_per_device = 2", "jobs_per_device = 1000000", "field 'run.jobs_per_device': expected a value <= 64"),
    ('devices = ["cpu"]', "devices = [" + ", ".join(['"cpu"'] * 65) + "]", "field 'run.devices': expected at most 64"),
    (
        'devices = ["cpu"]',
        "devices = [" + ", ".join(['"cpu"'] * 2000) + "]",
        "field 'run.devices': expected at most 1000",
    ),
    ("threads_per_job = 1", "threads_per_job = 100000000", "field 'run.threads_per_job': expected a value <= 1,024"),
    ("jobs_per_device = 2", "jobs_per_device = 2\ntimeout = 1e300", "field 'run.timeout': expected a value <="),
    ("epochs = 3", "epochs = 1000000000000", "field 'teacher.epochs': expected a value <= 100,000"),
    (
        "batch_size = 64\nlr = 0.01\nseed = 10",
        "batch_size = 100000000000\nlr = 0.01\nseed = 10",
        "field 'teacher.batch_size': expected a value <=",
    ),
    ("seed = 10", "seed = 9000000000000", "field 'teacher.seed': expected a value <= 2,147,483,647"),
    ("train_subset = 300", "train_subset = 300\nsplit_seed = 99999999999", "field 'task.split_seed'"),
    ("params = { hidden = [32] }", "params = { hidden = [1000000000000] }", "field 'teacher.params.hidden'"),
    (
        "params = { hidden = [32] }",
        "params = { hidden = [" + ", ".join(["8"] * 5000) + "] }",
        "field 'teacher.params.hidden': expected a non-empty list of positive integers (at most 1000",
    ),
    (
        "[run]",
        "[grid]\ntemperature = ["
        + ", ".join(str(1 + i / 1000) for i in range(999))
        + "]\n"
        + "alpha = ["
        + ", ".join(str(i / 2000) for i in range(999))
        + "]\n[run]",
        "field 'grid': expected a plan of at most 1,000,000 jobs",
    ),
]


@pytest.mark.parametrize("old, new, expected", BOMBS, ids=[b[2][:40] for b in BOMBS])
def test_resource_bombs_in_a_spec_are_refused_at_plan_and_run(project, old, new, expected):
    spec = digits_spec(project, n=2)
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new, 1))
    for command in ("plan", "run"):
        _refused(project, str(spec), command=command, pieces=[expected])


def test_a_deeply_nested_or_huge_spec_is_refused(project):
    deep = project / "deep.toml"
    deep.write_text('name = "x"\nteachers = 2\nk = ' + "[" * 50_000 + "]" * 50_000 + "\n")
    _refused(project, str(deep), command="plan", pieces=["deep.toml: spec: invalid TOML: arrays or tables nested"])
    big = project / "big.toml"
    big.write_text("# " + "x" * 2_000_000 + "\n")
    _refused(project, str(big), command="plan", pieces=["big.toml: spec: expected a spec of at most 1,048,576 bytes"])


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_spec_path_that_is_not_a_regular_file_never_hangs(project, kind):
    path = project / "sweep.toml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    expected = "got not a regular file" if kind == "fifo" else "got a folder"
    for command in ("plan", "run"):
        _refused(project, str(path), command=command, pieces=[f"sweep.toml: spec: expected a TOML file, {expected}"])


def test_teachers_only_exits_non_zero_when_a_teacher_fails(project):
    from bench.plan.jobs import make_plan
    from bench.spec.load import load_sweep

    spec = digits_spec(project, n=2, run="retries = 0")
    first = make_plan(load_sweep(spec)).teachers[0].key
    proc = bench_cli(
        "run", str(spec), "--teachers-only", "--quiet", "--no-report", cwd=project, env={"BENCH_RAISE_ON": first}
    )
    assert proc.returncode == 1, proc.stderr
    assert f"1 of 2 teachers failed ({first})" in proc.stderr, proc.stderr
    assert bench_cli("run", str(spec), "--teachers-only", "--quiet", "--no-report", cwd=project).returncode == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny sweep (teachers, records, logs, report), copied by each test that damages it."""
    root = tmp_path_factory.mktemp("finished")
    spec = digits_spec(root, n=2)
    proc = bench_cli("run", str(spec), "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


def _first(folder):
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))[0]


ODD = {
    "results/tiny is a file": lambda p: p / "results" / "tiny",
    "records is a file": lambda p: p / "results" / "tiny" / "records",
    "logs is a file": lambda p: p / "results" / "tiny" / "logs",
    "the lock is a folder": lambda p: p / "results" / "tiny" / ".lock",
    # a record of the wrong kind is quarantined and redone: tests/faults/test_damaged_records.py
    "a teacher is a file": lambda p: _first(p / "teachers" / "digits"),
    "teachers/digits is a file": lambda p: p / "teachers" / "digits",
    "reports/tiny is a file": lambda p: p / "reports" / "tiny",
    "report.md is a folder": lambda p: p / "reports" / "tiny" / "report.md",
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_states_of_the_output_folders_are_named_in_one_line(project, finished, case):
    for name in ("results", "teachers", "reports", "tiny.toml"):
        src = finished / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / name)
    target = ODD[case](project)
    was_folder = target.is_dir()
    shutil.rmtree(target) if was_folder else target.unlink()
    if was_folder:
        target.write_text("in the way\n")
    else:
        target.mkdir()
    # a pending job, so that the run would need every part of the layout
    records = project / "results" / "tiny" / "records"
    if records.is_dir() and case != "a record is a folder":
        _first(records).unlink()
    # named by its absolute path: output folders resolve from the project root, not the current directory
    expected = f"error: {target}: expected a " + ("folder" if was_folder else "file")
    _refused(project, "tiny.toml", "--quiet", pieces=[expected])
