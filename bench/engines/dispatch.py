"""Engines: where a sweep's queue of jobs runs. One interface, a table of implementations.

An engine takes the queue items (teachers, preparation jobs, distillation jobs with the keys
they wait for) and the [run] settings, runs every item whose dependencies finish, and returns
what finished, failed and was skipped. Whatever the engine, a job runs in a ``bench.engines.worker``
process (same code, same timings, same records); the engine only decides where and when.

- ``local``: one worker process per device slot on this machine (bench/engines/queue.py).
- ``dask``: a Dask cluster: a local one on loopback, or the scheduler at ``run.scheduler``
  (bench/engines/dask_engine.py).
- ``slurm``: a Dask cluster whose workers are Slurm jobs (bench/engines/cluster.py, docs/cluster.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import lookup
from bench.engines.cluster import connect, slurm_client
from bench.engines.dask_engine import drive
from bench.engines.queue import Item, QueueResult, Worker, make_slots, run_queue, spawn_workers


@dataclass(frozen=True)
class Hooks:
    """What an engine reports to the driver while it runs."""

    on_final_failure: Callable[[Item], None]  # an item is out of attempts
    progress: Callable[[dict], None]  # Scheduler.counts(): done, failed, running, remaining, phases
    is_done: Callable[[Item], bool]  # did a job whose reply was lost leave its result?


def job_threads(run) -> int:
    """The torch (and OpenMP) thread count of every job of the run, on every engine: scores depend
    on it, so the driver decides it once and sends it with each job. ``run.threads_per_job``, or by
    default the cores shared by the jobs that run at once: this machine's cores / (devices x
    jobs_per_device) for the local engine and a local Dask cluster; ``slurm.cores`` / the jobs one
    Slurm worker runs at once for slurm; 1 on the workers of a scheduler named by ``run.scheduler``,
    whose cores the driver cannot know."""
    if run.threads_per_job:
        return run.threads_per_job
    if run.engine == "slurm":
        return max(1, run.slurm.cores // run.slurm_jobs_at_once())
    if run.engine == "dask" and run.scheduler:
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, run.slots()))


def local_slots(run) -> list:
    """The local engine's slots: ``run.devices`` x ``run.jobs_per_device``, each with the run's threads."""
    return make_slots(run.devices, run.jobs_per_device, job_threads(run))


def early_workers(run, log_dir: Path) -> dict[str, Worker]:
    """For the local engine, its slots' worker processes started now (``queue.spawn_workers``),
    so that their start-up overlaps the driver's planning; ``run_engine`` adopts them, and the
    caller closes them (``Worker.close``) when it ends, whatever happened. Other engines: none."""
    return spawn_workers(local_slots(run), log_dir) if run.engine == "local" else {}


def run_local(
    items: list[Item], run, log_dir: Path, hooks: Hooks, done_keys: set[str], spawned: dict | None = None
) -> QueueResult:
    """The local device queue: ``run.devices`` x ``run.jobs_per_device`` worker processes."""
    return run_queue(
        items,
        local_slots(run),
        log_dir,
        run.retries,
        run.timeout,
        run.max_jobs_per_worker,
        hooks.on_final_failure,
        hooks.progress,
        done_keys=done_keys,
        is_done=hooks.is_done,
        retry_on=run.retry_on,
        spawned=spawned,
    )


def run_dask(
    items: list[Item], run, log_dir: Path, hooks: Hooks, done_keys: set[str], spawned: dict | None = None
) -> QueueResult:
    """A Dask cluster: ``run.scheduler``, or a local cluster on loopback built from ``run.devices``
    (its workers start their own processes: ``spawned`` is for the local engine only, and empty)."""

    with connect(run) as client:
        return drive(client, items, run, log_dir, hooks, done_keys)


def run_slurm(
    items: list[Item], run, log_dir: Path, hooks: Hooks, done_keys: set[str], spawned: dict | None = None
) -> QueueResult:
    """A Dask cluster of Slurm worker jobs that adapts to the queue (``[run.slurm]``; ``spawned``:
    as for ``run_dask``, empty)."""

    with slurm_client(run, log_dir) as client:
        return drive(client, items, run, log_dir, hooks, done_keys)


ENGINES: dict[str, Callable[..., QueueResult]] = {"local": run_local, "dask": run_dask, "slurm": run_slurm}


def run_engine(
    items: list[Item], run, log_dir: Path, hooks: Hooks, done_keys: set[str], spawned: dict | None = None
) -> QueueResult:
    """Run the items on the engine that ``run.engine`` names (the local one adopts the workers
    ``early_workers`` spawned)."""
    return lookup(ENGINES, run.engine, "engine")(items, run, log_dir, hooks, done_keys, spawned)
