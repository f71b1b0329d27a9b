"""Dask clusters for the ``dask`` and ``slurm`` engines: a local one on loopback, a connection to
a running scheduler, or Slurm worker jobs (dask-jobqueue). Nothing binds beyond loopback unless
the user names an address.

GPUs are Dask worker resources: a GPU worker advertises ``GPU=1`` and sees only its GPU
(``CUDA_VISIBLE_DEVICES`` in the worker's environment, as dask-cuda sets it); a job asks for
``run.gpu_share()`` of one, so 0.5 packs two students per GPU. The worker's threads are its job
slots; each runs its jobs in a ``bench.engines.worker`` process (bench/engines/dask_engine.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.core.config import parse_device
from bench.core.errors import UserError
from bench.core.interrupt import install

log = logging.getLogger(__name__)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UserError("the dask and slurm engines need Dask distributed: pip install -e '.[dask]'") from None
    return distributed


LOOPBACK = "127.0.0.1"


def dashboard_address(value: str) -> str | None:
    """The dashboard address to bind: '' -> none, '8787' or ':8787' -> 127.0.0.1:8787, 'host:port' as
    named (the only way to listen beyond loopback)."""
    if not value:
        return None
    port = value.removeprefix(":")
    return f"{LOOPBACK}:{port}" if port.isdigit() else value


def local_cluster(devices: tuple[str, ...], threads: int, job_threads: int = 0, dashboard: str = ""):
    """A Dask cluster on loopback with one worker per device and ``threads`` job slots each; GPU
    workers advertise the resource GPU=1 and see only their GPU."""
    distributed = _distributed()
    job_threads = job_threads or max(1, (os.cpu_count() or 1) // max(1, len(devices) * threads))
    dash = dashboard_address(dashboard)
    workers = {}
    for i, device in enumerate(devices):
        kind, index = parse_device(device)
        workers[f"{i}-{device}"] = {
            "cls": distributed.Nanny,
            "options": {
                "nthreads": threads,
                "host": LOOPBACK,
                "dashboard": False,
                "dashboard_address": f"{LOOPBACK}:0",
                "memory_limit": 0,
                "silence_logs": 40,
                "resources": {"GPU": 1} if kind == "cuda" else {},
                "env": {"CUDA_VISIBLE_DEVICES": "" if kind == "cpu" else str(index), "BENCH_THREADS": str(job_threads)},
            },
        }
    scheduler = {
        "cls": distributed.Scheduler,
        "options": {
            # the scheduler's HTTP server (dashboard, /health, /metrics) runs even without a dashboard:
            # it too listens on loopback unless an address is named
            "host": LOOPBACK,
            "port": 0,
            "dashboard": dash is not None,
            "dashboard_address": dash or f"{LOOPBACK}:0",
        },
    }
    return distributed.SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40, name="bench")


def _config(run):
    import dask

    # a task whose worker dies is rerun elsewhere, at most this many times (then it fails: KilledWorker)
    return dask.config.set({"distributed.scheduler.allowed-failures": max(1, run.retries + 1)})


@contextmanager
def connect(run) -> Iterator:
    """A Dask client: to ``run.scheduler`` (an address or a scheduler file) or to a new local cluster."""
    distributed = _distributed()
    with _config(run):
        if run.scheduler:
            kind = "scheduler_file" if os.path.isfile(run.scheduler) else "address"
            try:
                client = distributed.Client(**{kind: run.scheduler}, timeout=30)
            except (OSError, TimeoutError, ValueError) as e:
                raise UserError(f"cannot reach the Dask scheduler {run.scheduler!r} (run.scheduler): {e}") from None
            with client:
                yield client
            return
        with local_cluster(run.devices, run.jobs_per_device, run.threads_per_job, run.dashboard) as cluster:
            with distributed.Client(cluster) as client:
                yield client


def slurm_cluster(run, log_dir: Path, job_name: str = "bench-worker"):
    """A dask-jobqueue SLURMCluster for ``[run.slurm]``: one worker per job named ``job_name``,
    GPU=1 per GPU worker, workers retiring before the walltime. Its scheduler binds to
    ``run.slurm.host`` / interface."""

    _distributed()
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise UserError("the slurm engine needs dask-jobqueue: pip install -e '.[dask]'") from None
    install()  # dask-jobqueue 0.9.0 replaces the SIGINT handler on import (dask/dask-jobqueue#696)
    s = run.slurm
    extra = ["--resources", "GPU=1"] if s.gpus else []
    if s.lifetime:
        extra += ["--lifetime", s.lifetime, "--lifetime-stagger", s.lifetime_stagger]
    scheduler = {
        "dashboard_address": dashboard_address(run.dashboard) or f"{LOOPBACK}:0",
        "dashboard": bool(run.dashboard),
    }
    if s.host:
        scheduler["host"] = s.host
    with _config(run):
        return SLURMCluster(
            queue=s.partition or None,
            account=s.account or None,
            walltime=s.walltime,
            cores=s.cores,
            processes=1,
            memory=s.memory,
            interface=s.interface or None,
            scheduler_options=scheduler,
            job_extra_directives=(["--gres=gpu:1"] if s.gpus else []) + list(s.job_directives),
            worker_extra_args=extra,
            job_script_prologue=list(s.prologue),
            python=s.python or sys.executable,
            log_directory=s.log_directory or str(log_dir / "slurm"),
            job_name=job_name,
        )


@contextmanager
def slurm_client(run, log_dir: Path) -> Iterator:
    """A client of a SLURMCluster that adapts between 1 and ``run.slurm.max_workers`` worker jobs,
    all named ``bench-<8 hex digits>``, this driver's own: a reaper (bench/engines/reaper.py) cancels them
    when the driver ends, even by SIGKILL, so no worker job is left pending or running."""
    import distributed

    name = f"bench-{uuid.uuid4().hex[:8]}"
    reaper = subprocess.Popen(
        [sys.executable, "-m", "bench.engines.reaper", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert reaper.stdin is not None  # stdin=PIPE
    log.info("slurm: worker jobs are named %s (`scancel --name %s` ends them; they end with this run)", name, name)
    try:
        cluster = slurm_cluster(run, log_dir, name)
        with cluster:
            cluster.adapt(minimum=1, maximum=run.slurm.max_workers)
            with distributed.Client(cluster) as client:
                yield client
    finally:
        reaper.stdin.close()  # the reaper cancels whatever the cluster's close left behind
