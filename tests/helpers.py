"""Test helpers: small specs written into a temporary project folder, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "data" / "glue"

DIGITS_SPEC = """
name = "{name}"
teachers = {n}
repeats = {r}

[task]
name = "digits"
train_subset = {train_subset}

[teacher]
model = "mlp"
params = {{ hidden = [32] }}
epochs = 3
batch_size = 64
lr = 0.01
seed = 10

[student]
model = "mlp"
params = {{ hidden = [8] }}
epochs = {student_epochs}
batch_size = 64
lr = 0.01

[method]
name = "{method}"
{extra}
[run]
devices = ["cpu"]
jobs_per_device = 2
threads_per_job = 1
{run}
"""


def digits_spec(
    folder: Path,
    name: str = "tiny",
    n: int = 3,
    r: int = 1,
    method: str = "kd",
    train_subset: int = 300,
    extra: str = "",
    run: str = "",
    student_epochs: int = 2,
) -> Path:
    """Write a small, fast digits sweep spec into ``folder`` and return its path; ``extra`` goes
    before the [run] table (e.g. a [grid] table), ``run`` inside it."""
    path = folder / f"{name}.toml"
    path.write_text(
        DIGITS_SPEC.format(
            name=name,
            n=n,
            r=r,
            method=method,
            train_subset=train_subset,
            student_epochs=student_epochs,
            extra=textwrap.dedent(extra),
            run=textwrap.dedent(run),
        )
    )
    return path


def bench_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the ``bench`` command as a user would (a subprocess)."""
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def records(results: Path) -> dict[str, dict]:
    """Every record file of a sweep's results folder, by key."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))}


def finished_sweep(folder: Path, n: int, r: int) -> Path:
    """Run a tiny digits sweep to the end in ``folder`` (no report); tests copy it to damage it."""
    spec = digits_spec(folder, n=n, r=r)
    proc = bench_cli("run", str(spec), "--no-report", "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder


def copy_of(finished: Path, tmp_path: Path) -> Path:
    """A private copy of a finished sweep's folder (spec, results, teachers, cache)."""
    import shutil

    folder = tmp_path / "sweep"
    shutil.copytree(finished, folder, symlinks=True)  # a damaged sweep may hold symlinks
    return folder


def with_sitecustomize(folder: Path, code: str) -> dict[str, str]:
    """Environment for ``bench_cli`` whose interpreter first runs ``code`` (a sitecustomize first on
    PYTHONPATH): how a test makes a package look missing or a function misbehave in a real CLI run."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code))
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}


def without_packages(folder: Path, *names: str) -> dict[str, str]:
    """Environment for ``bench_cli`` in which ``names`` cannot be imported (as if not installed):
    marked missing in ``sys.modules`` (import fails, find_spec says None)."""
    return with_sitecustomize(folder, "import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in names))
