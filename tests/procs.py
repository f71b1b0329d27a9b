"""Process helpers for fault tests: find the processes a `bench run` started (by a tag in their
environment, which every child inherits: workers, Dask workers, job processes), wait on conditions
with generous limits (tests never depend on the machine's speed), and clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

TAG = "BENCH_TEST_TAG"


def wait_for(condition: Callable[[], bool], what: str, limit: float = 600.0, every: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``limit`` seconds (a hang, not slowness)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {limit:g} s waiting for: {what}"
        time.sleep(every)


def tagged(tag: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose environment carries ``tag``."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(TAG) == tag:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def job_processes(tag: str) -> list[psutil.Process]:
    """The live ``bench.engines.worker`` processes of a tagged run."""
    out = []
    for p in tagged(tag):
        try:
            if "bench.engines.worker" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def imported_torch(pid: int) -> bool:
    """Whether the process has loaded libtorch (a worker reports ready only after that)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True  # gone: treat as past its start


def start_run(spec: Path, cwd: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`bench run SPEC --quiet --no-report ARGS` as a user would start it, tagged; returns (process, tag)."""
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(spec), "--quiet", "--no-report", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {}), TAG: tag},
        start_new_session=True,
    )
    return proc, tag


def kill_tagged(tag: str) -> None:
    """Clean-up: SIGKILL whatever a tagged run left."""
    for p in tagged(tag):
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
