"""Where and with what a result was produced: versions, git commit, host, process, Slurm job."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the bench checkout (with '+dirty' when it has changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of python and of the packages that shape results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("bench", "torch", "transformers", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def provenance() -> dict:
    """Where and with what a record was produced (``slurm``: the Slurm job it ran in, or None)."""
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "pid": os.getpid(),
        "slurm": slurm_job(),
    }


def slurm_job() -> dict | None:
    """The Slurm job this process runs in: its id, node, the CPUs allocated to it (``cpus``:
    ``--cpus-per-task``, else the job's CPUs on this node) and its GPUs as the node numbers them
    (``gpus``, Slurm's SLURM_JOB_GPUS), or None outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or ""
    return {
        "job_id": job,
        "node": os.environ.get("SLURMD_NODENAME"),
        "cpus": int(cpus) if cpus.isdigit() else None,
        "gpus": os.environ.get("SLURM_JOB_GPUS"),
    }
