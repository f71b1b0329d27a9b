"""Files of reports and runs: two reports of one sweep at once (per-process temporaries, a report
lock), temporaries of killed processes removed at the next start, a full disk as one line naming
the file (exit 1), and output files that respect the umask."""

import errno
import fcntl
import os
import subprocess
import sys
import time

import pytest
from helpers import bench_cli, copy_of, digits_spec, finished_sweep

from bench import cli
from bench.core import files as records_module

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_sweep(tmp_path_factory.mktemp("finished"), n=2, r=2)


@pytest.fixture
def sweep(finished, tmp_path, monkeypatch):
    folder = copy_of(finished, tmp_path)
    monkeypatch.chdir(folder)
    return folder, folder / "tiny.toml"


def _bench(*args):
    return [sys.executable, "-m", "bench.cli", *args]


def test_two_reports_of_one_sweep_at_once_both_finish(sweep):
    folder, spec = sweep
    procs = [
        subprocess.Popen(
            _bench("report", str(spec)), cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    reports = folder / "reports" / "tiny"
    assert (reports / "by_k.png").is_file() and "## Verdict" in (reports / "report.md").read_text()
    assert not [p.name for p in reports.iterdir() if "tmp" in p.name]


def test_a_second_report_waits_for_the_first(sweep):
    folder, spec = sweep
    reports = folder / "reports" / "tiny"
    reports.mkdir(parents=True)
    log = folder / "second.err"
    with open(reports / ".lock", "a+") as f, open(log, "w") as err:  # a report of this sweep is being written
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("pid 4242\n")
        f.flush()
        proc = subprocess.Popen(_bench("report", str(spec)), cwd=folder, stdout=subprocess.PIPE, stderr=err, text=True)
        deadline = time.time() + 200
        while "waiting:" not in log.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and not (reports / "report.md").exists(), log.read_text()
        fcntl.flock(f, fcntl.LOCK_UN)
        proc.communicate(timeout=240)
    assert proc.returncode == 0, log.read_text()
    assert "waiting: another bench report of this sweep is writing" in log.read_text() and "pid 4242" in log.read_text()
    assert (reports / "report.md").is_file()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_processes_are_removed_at_the_next_start(sweep):
    folder, spec = sweep
    dead, live = _dead_pid(), os.getpid()
    teacher = next((folder / "teachers" / "digits").iterdir())
    stale = [
        folder / "results" / "tiny" / "records" / f".abc.json.{dead}-x1.tmp",
        folder / "results" / "tiny" / f".other.json.{dead}-x2.tmp",
        teacher / f".aug-1.npz.{dead}-x3.tmp",
        folder / ".cache" / "bench" / "digits" / f".digits-1.npz.{dead}-x4.tmp",
        folder / "reports" / "tiny" / f".report.md.{dead}-x5.tmp",
    ]
    kept = [
        folder / ".cache" / "bench" / "digits" / f".digits-2.npz.{live}-x6.tmp",  # a live writer's
        folder / "reports" / "tiny" / "notes.txt",
    ]
    half_teacher = folder / "teachers" / "digits" / f".{teacher.name}.tmp-{dead}"
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    half_teacher.mkdir()
    (half_teacher / "model.safetensors").write_text("half")
    proc = bench_cli("run", str(spec), "--no-report", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert [p for p in stale if p.exists()] == [] and not half_teacher.exists()
    assert all(p.exists() for p in kept)
    (folder / "reports" / "tiny" / f".by_k.png.{dead}-x7.tmp").write_text("half")
    assert bench_cli("report", str(spec), cwd=folder).returncode == 0
    assert not [p.name for p in (folder / "reports" / "tiny").iterdir() if p.name.endswith(".tmp")]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("command", ["report", "run"])
def test_a_full_disk_is_one_line_naming_the_file(sweep, monkeypatch, capsys, command):
    folder, spec = sweep
    monkeypatch.setattr(records_module.os, "fsync", _enospc)  # every atomic write fails as on a full disk
    code = cli.main([command, str(spec)] + (["--quiet"] if command == "run" else []))
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    # `bench run` first writes results/tiny/spec.toml (the spec it runs with), `bench report` its report,
    # both under the project root (the spec's folder here), named absolute
    first = f"error: {folder}/reports/tiny/" if command == "report" else f"error: {folder}/results/tiny/spec.toml"
    assert last.startswith(first) and last.endswith(": No space left on device"), err
    assert "Traceback" not in err
    for out in (folder / "reports" / "tiny", folder / "results" / "tiny"):
        assert not [p.name for p in out.glob("*") if p.name.endswith(".tmp")]  # no partial file left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_output_files_respect_the_umask(tmp_path, umask):
    spec = digits_spec(tmp_path, n=2, r=1)
    proc = subprocess.run(
        _bench("run", str(spec), "--quiet"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=lambda: os.umask(umask),
    )
    assert proc.returncode == 0, proc.stderr
    files = [
        p for root in ("results", "reports", "teachers", ".cache") for p in (tmp_path / root).rglob("*") if p.is_file()
    ]
    kinds = {p.suffix for p in files}
    assert {".json", ".csv", ".md", ".html", ".png", ".pdf", ".npz", ".safetensors"} <= kinds
    wrong = {
        str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777)
        for p in files
        if p.stat().st_mode & 0o777 != 0o666 & ~umask
    }
    assert not wrong, f"expected {oct(0o666 & ~umask)}"
