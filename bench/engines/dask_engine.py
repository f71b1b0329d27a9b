"""The Dask engine: the driver hands each job to a Dask cluster as soon as its dependencies are
done, and a Dask worker runs it in a ``bench.engines.worker`` process, exactly as the local queue does.

Driver side (``drive``): the same ``Scheduler`` as the local queue tracks dependencies, retries
and failures; jobs are submitted with only paths and configs (never model objects) and a
resource request (``GPU=share``); the worker writes each record the moment its job ends, so a
result is never held on a worker that may die. Before submitting, the cluster must be able to
satisfy the GPU request, else the run stops at once (Dask would otherwise wait forever).

Worker side (``execute``): each Dask worker thread keeps one ``bench.engines.worker`` subprocess (its
slot), started with the worker's GPU visibility, the run's thread count (``engines.dispatch.job_threads``)
and ``BENCH_DRIVER``: a Dask worker that is killed takes its job's process with it (every
``bench.engines.worker`` dies with its parent), and Dask reruns the task on another worker (at most
``allowed-failures`` times, then the driver counts a failed attempt). A job process also ends when
its driver, on the same host, is gone, and while a job runs ``execute`` checks once a second that
Dask still wants its result (a driver that stopped or lost its scheduler releases it): a job whose
driver is gone never keeps running for hours. A job process that dies while starting costs that
job one attempt, as a death mid-job does. Separate processes
keep jobs that share a worker from sharing torch's global RNG, so scores do not depend on the
engine.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import traceback
import uuid
from pathlib import Path

from bench.core.contracts import JobPayload
from bench.core.errors import UserError
from bench.core.interrupt import install
from bench.core.provenance import slurm_job
from bench.engines.queue import (
    Item,
    QueueResult,
    Scheduler,
    Slot,
    Worker,
    WorkerError,
    WorkerGone,
    WorkerUnusable,
    attempt_timeout,
    member_replies,
    run_job,
)

_STATE = threading.local()
_THREAD_NUMBERS = itertools.count()


def _slot(share: float, threads: int, driver: str) -> tuple[Slot, dict]:
    """This Dask worker thread's slot: its device, the run's thread count and extra environment
    (the driver a job process watches). In a Slurm job the slot is named after the job too, since
    a replacement worker job takes the name of the one it replaces."""
    from distributed import get_worker

    w = get_worker()
    gpu = share > 0
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    device = ("cuda:" + (first if first.isdigit() else "0")) if gpu else "cpu"
    if not hasattr(_STATE, "number"):
        _STATE.number = next(_THREAD_NUMBERS)
    extra = {"BENCH_DRIVER": driver}
    if gpu and first and not first.isdigit():
        extra["CUDA_VISIBLE_DEVICES"] = first  # a GPU named by UUID
    job = slurm_job()
    name = w.name if job is None else f"{w.name}@slurm{job['job_id']}"
    return Slot(f"{name}#{_STATE.number}", device, threads), extra


def oversubscribed(threads: int, share: float, nthreads: int, gpus: float, job: dict | None) -> str | None:
    """Why jobs of ``threads`` threads would use more CPUs than Slurm allocated to the worker job
    ``job`` (``records.slurm_job``) whose worker has ``nthreads`` slots and ``gpus`` GPU resource:
    its jobs at once x threads > its CPUs. None when they fit, or outside Slurm."""
    if job is None or not job["cpus"]:
        return None
    at_once = nthreads if share <= 0 else max(1, min(nthreads, int(gpus / share + 1e-9)))
    if threads * at_once <= job["cpus"]:
        return None
    return (
        f"Slurm job {job['job_id']} has {job['cpus']} CPU(s) for {at_once} job(s) at once, too few for "
        f"{threads} threads each; expected run.threads_per_job <= {max(1, job['cpus'] // at_once)}"
    )


def execute(
    payload: JobPayload, share: float, timeout: float, max_jobs: int, ready_at: float, log_dir: str, driver: str
) -> dict:
    """Run one job (asking for ``share`` of a GPU) in this thread's worker process, started on
    first use; returns its reply with the slot it ran on. Runs on a Dask worker; ``driver``
    (host:pid) is the process a job process watches, ``ready_at`` when the job's dependencies
    were met."""
    from distributed import get_worker  # lazy: Dask is imported by the engines that use it

    slot, extra = _slot(share, payload.threads, driver)
    w = get_worker()
    problem = oversubscribed(
        payload.threads, share, w.state.nthreads, w.state.total_resources.get("GPU", 0), slurm_job()
    )
    if problem:
        return {"status": "failed", "error": problem, "fatal": True, "slot": slot.name}
    workers = _STATE.__dict__.setdefault("workers", {})
    worker = workers.get(slot.device)
    if worker is not None and (worker.slot != slot or worker.extra_env != extra):
        worker.stop()  # another run's driver or thread count: a fresh process
        worker = None
    if worker is None:
        name = slot.name.replace(":", "").replace("#", "-").replace("/", "-")
        worker = workers[slot.device] = Worker(slot, Path(log_dir) / f"dask-{name}.log", extra)
    reply = {"status": "failed", "error": "worker process died before the job started, 3 times"}
    wanted = _still_wanted()
    for _ in range(3):
        if not worker.usable():
            try:
                worker.start()
            except WorkerUnusable as e:
                return {"status": "failed", "error": str(e), "fatal": True, "slot": slot.name}
            except WorkerError as e:  # died or hung while starting: this attempt failed
                worker.kill()
                return {"status": "failed", "error": f"while starting: {e}", "kind": e.kind, "slot": slot.name}
        job = payload.dispatched(payload.attempt, slot.name, slot.device, max(0.0, time.time() - ready_at))
        try:
            reply = run_job(worker, job, timeout or None, wanted)
        except WorkerGone:  # died while idle: a fresh process, same attempt
            worker.stop()
            continue
        break
    if reply["status"] != "ok" or (max_jobs and worker.jobs >= max_jobs):
        worker.stop()  # a fresh process for the next job, as the local queue does
    return {**reply, "slot": slot.name}


def _still_wanted():
    """A check that the Dask task running in this thread is still wanted: False once the scheduler
    released it (its driver stopped or died). A worker that loses its scheduler closes, and its job
    processes die with it; one that retires gracefully (``--lifetime``) lets its task finish."""
    from distributed import get_worker

    w = get_worker()
    key = w.get_current_task()

    def wanted() -> bool:
        ts = w.state.tasks.get(key)
        return ts is not None and ts.state in ("executing", "long-running")

    return wanted


def check_resources(client, share: float, wait: float) -> None:
    """Fail at once when no worker of the cluster could ever run a job asking for ``share`` GPU."""
    try:
        client.wait_for_workers(1, timeout=wait or None)
    except TimeoutError:
        raise UserError(
            f"no Dask worker joined the scheduler {client.scheduler.address} within {wait:g} s (run.worker_wait)"
        ) from None
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    if share > 0:
        offered = sorted({w.get("resources", {}).get("GPU", 0) for w in workers})
        if max(offered) < share:
            raise UserError(
                f"each job asks for GPU={share:g} (run.gpus_per_job / jobs_per_device) but the workers "
                f"of {client.scheduler.address} offer GPU={', '.join(f'{g:g}' for g in offered)}; "
                f"start GPU workers with `--resources GPU=1`, or set run.gpus_per_job = 0 for CPU jobs"
            )


def _outcome(future) -> dict:
    try:
        return future.result()
    except Exception as e:  # KilledWorker (its workers kept dying), cancelled, unpicklable payload ...
        return {
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "kind": "crash" if type(e).__name__ == "KilledWorker" else "error",
            "traceback": "".join(traceback.format_exception(e)),
        }


def drive(client, items: list[Item], run, log_dir: Path, hooks, done_keys: set[str]) -> QueueResult:
    """Run the items on the cluster of ``client``: each as soon as its dependencies are done,
    failures retried ``run.retries`` times; returns what finished, failed and was skipped."""
    from distributed import as_completed

    install()  # a library imported on the way here (dask-jobqueue) may have replaced the SIGINT handler
    start = time.time()
    share = run.gpu_share()
    check_resources(client, share, run.worker_wait)
    sched = Scheduler(items, set(done_keys), run.retries, hooks.on_final_failure, hooks.progress, run.retry_on)
    resources = {"GPU": share} if share > 0 else None
    log_dir = log_dir.resolve()
    live: dict[str, tuple] = {}  # future key -> (item, future)
    pending = as_completed()

    driver = f"{socket.gethostname()}:{os.getpid()}"

    def submit(item: Item) -> None:
        item.attempts += 1
        future = client.submit(
            execute,
            item.payload.dispatched(item.attempts, "", "", 0.0),  # the worker names slot, device and wait
            share,
            attempt_timeout(item, run.timeout),
            run.max_jobs_per_worker,
            item.ready_at,
            str(log_dir),
            driver,
            key=f"{item.kind}-{item.key[:16]}-a{item.attempts}-{uuid.uuid4().hex[:6]}",
            pure=False,
            resources=resources,
        )
        live[future.key] = (item, future)
        pending.add(future)

    try:
        for item in sched.take_ready():
            submit(item)
        for future in pending:
            item, _ = live.pop(future.key)
            reply = _outcome(future)
            future.release()
            item.slot, item.traceback = reply.get("slot"), reply.get("traceback")
            item.failure, item.step, item.seconds = reply.get("kind"), reply.get("step"), reply.get("seconds")
            if reply.get("fatal"):
                sched.stop()
                raise UserError(
                    f"a Dask worker could not start a job process on slot {reply.get('slot')}: {reply['error']}"
                )
            ok = reply["status"] == "ok" or (not item.members and hooks.is_done(item))
            sched.finish(item, ok, None if ok else reply.get("error"), member_replies(item, reply, hooks.is_done))
            for ready in sched.take_ready():
                submit(ready)
    finally:
        if live:
            client.cancel([f for _, f in live.values()])
    sched.close()
    result = sched.result
    assert len(result.done) + len(result.failed) + len(result.skipped) == sched.total, "engine lost a job"
    result.wall = time.time() - start
    return result
