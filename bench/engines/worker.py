"""A worker process: runs jobs sent by the driver one at a time, on one device slot.

Protocol: one JSON object per line. The driver writes jobs to the worker's stdin; the worker
answers on the original stdout (``{"ready": ...}`` once, then per job ``{"started": key}`` as soon
as it has read it and one reply when it ends; a worker that dies before ``started`` never ran the job).
Everything the job code prints goes to stderr, which the driver sends to the slot's log file.
The driver sets ``BENCH_DEVICE``, ``CUDA_VISIBLE_DEVICES`` and the thread counts before start,
and ``BENCH_SPAWNED_AT`` (its ``time.time()`` when it started the process).

Accounting: the worker's start-up (from ``BENCH_SPAWNED_AT`` to ready: the interpreter, torch and
bench imports) and its warm-up before the first job of a task (``runners.warm_up``: task data,
caches, libraries) are one-off costs, never a job's: each job's clock starts after them; the
record (or teacher meta) of the job they precede says how long they took in
``timings.worker_startup``, outside ``total``, and the reply to the driver in ``worker_startup``
next to the job's own ``seconds``.

Testing hooks (fault injection, documented in docs/architecture.md): ``BENCH_CRASH_ON=<key prefix>``
makes the worker exit abruptly when it starts a job whose key has that prefix;
``BENCH_RAISE_ON=<prefix>[,<prefix>...]`` makes such jobs raise, ``BENCH_OOM_ON`` makes them
raise torch's out-of-memory error, ``BENCH_HANG_ON`` makes them hang (for ``run.timeout``).

A worker never outlives the process that started it (the driver's slot, or a Dask worker): first
thing, before importing torch, it asks Linux for SIGKILL when its parent dies (prctl
PR_SET_PDEATHSIG; the parent is the *thread* that started it, which lives as long as the slot) and,
as a portable fallback, watches its parent's pid (and ``BENCH_DRIVER=<host>:<pid>``, the driver of a
Dask run on the same host) from a thread that ends the process within a second of its death, mid-job
too. So a driver killed by SIGKILL, or a Dask worker that dies, leaves no job running (a GPU busy
for hours) that a rerun would compute again. It ignores SIGINT: Ctrl-C in a terminal reaches the
whole process group, and the driver, which gets it too, stops its workers itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import traceback

from bench.core.contracts import JobPayload
from bench.core.errors import is_network_error
from bench.core.files import pid_alive
from bench.core.logs import configure as configure_logging
from bench.engines.runners import RUNNERS, warm_up
from bench.training.loop import Diverged, set_determinism


def resolve_device(name: str):
    """The torch device this worker uses for slot device ``name`` ('cpu' or 'cuda:N')."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda:0")  # CUDA_VISIBLE_DEVICES holds the slot's GPU only
    if os.environ.get("BENCH_SIMULATE_GPU") == "1":
        return torch.device("cpu")
    raise RuntimeError(
        f"device {name} requested but torch sees no CUDA device "
        f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})"
    )


def quiet_libraries() -> None:
    """transformers' loading notes ("Some weights ... were not initialized", expected for every
    classifier head) at error level only, in this worker process, so the slot's log keeps what
    matters; set before transformers is imported (its TRANSFORMERS_VERBOSITY), and a user's own
    TRANSFORMERS_VERBOSITY wins. Done here, never at import or in a builder: bench used as a library
    leaves the user's logging as it was."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    t0 = time.perf_counter()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_libraries()
    configure_logging()  # bench's warnings (a damaged cache rebuilt) in the slot's log, as the driver shows them
    exit_with_parent()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        import torch

        threads = int(os.environ.get("BENCH_THREADS", "1"))
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)  # else one per CPU of the machine, whatever Slurm allocated
        device = resolve_device(os.environ.get("BENCH_DEVICE", "cpu"))
    except Exception as e:  # reported to the driver, which stops the sweep
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return
    startup = started_seconds(t0)
    send({"ready": True, "pid": os.getpid(), "startup": startup, "device": str(device)})
    pending_startup = startup  # charged to no job: recorded with the first one, outside its total
    crash_on = os.environ.get("BENCH_CRASH_ON")
    raise_on = tuple(p for p in os.environ.get("BENCH_RAISE_ON", "").split(",") if p)
    oom_on = tuple(p for p in os.environ.get("BENCH_OOM_ON", "").split(",") if p)
    hang_on = tuple(p for p in os.environ.get("BENCH_HANG_ON", "").split(",") if p)
    for line in sys.stdin:
        raw = json.loads(line)
        key = str(raw.get("key")) if isinstance(raw, dict) else ""
        send({"started": key})  # a death before this line costs the job no attempt
        if crash_on and key.startswith(crash_on):
            os._exit(137)
        start = time.perf_counter()
        one_off = 0.0
        try:
            job = JobPayload.from_wire(raw)  # a driver of another bench version: this job fails, saying so
            if raise_on and key.startswith(raise_on):
                raise RuntimeError("injected fault (BENCH_RAISE_ON)")
            if oom_on and key.startswith(oom_on):
                raise torch.OutOfMemoryError("simulated out of memory (BENCH_OOM_ON)")
            while hang_on and key.startswith(hang_on):
                time.sleep(1)
            set_determinism(job.deterministic)
            if job.threads:
                torch.set_num_threads(job.threads)  # run.threads_per_job, whatever the engine
            if job.paths.root:
                os.chdir(job.paths.root)  # the config's relative data and weights paths resolve from the project root
            one_off, pending_startup = pending_startup + warm_up(job, device), 0.0
            start = time.perf_counter()  # the job's own clock starts after the one-off costs
            result = RUNNERS[job.kind](job, device, one_off)
            reply = {"key": key, **outcome(result), "seconds": time.perf_counter() - start, "worker_startup": one_off}
            if "members" in result:  # a stack: how each of its jobs ended
                reply["members"] = {k: outcome(v) for k, v in result["members"].items()}
            send(reply)
        except Exception as e:
            send({"key": key, **outcome(e), "seconds": time.perf_counter() - start, "worker_startup": one_off})


def outcome(result: dict | BaseException) -> dict:
    """A job's reply fields: ok with its score, or failed with the exception's kind, step (a
    divergence) and traceback (also printed to the slot's log)."""
    if not isinstance(result, BaseException):
        return {"status": "ok", "score": result.get("score")}
    tb = "".join(traceback.format_exception(result))
    print(tb, file=sys.stderr)
    return {
        "status": "failed",
        "error": f"{type(result).__name__}: {result}",
        "kind": failure_kind(result),
        "step": getattr(result, "step", None),
        "traceback": tb,
    }


def started_seconds(t0: float) -> float:
    """Seconds this worker took to start: from ``BENCH_SPAWNED_AT`` (the driver's clock when it
    started the process, same host) when set, else from ``t0`` (``main``'s first line, which misses
    the interpreter and the imports of this module)."""
    spawned = os.environ.get("BENCH_SPAWNED_AT", "")
    try:
        return max(0.0, time.time() - float(spawned))
    except ValueError:
        return time.perf_counter() - t0


def failure_kind(e: BaseException) -> str:
    """What went wrong, for the retry policy (``run.retry_on``): diverged, oom, network or error."""

    if isinstance(e, Diverged):
        return "diverged"
    if is_network_error(e):  # the hub unreachable: retrying costs minutes and repeats it
        return "network"
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower():
        return "oom"
    return "error"


PR_SET_PDEATHSIG = 1


def exit_with_parent() -> None:
    """End this process (SIGKILL, or os._exit from a watchdog thread) as soon as the process that
    started it dies, or the driver named by ``BENCH_DRIVER=<host>:<pid>`` when it runs on this host."""
    import threading

    parent = int(os.environ.get("BENCH_PARENT_PID") or os.getppid())
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog below does it
        pass
    host, _, pid = os.environ.get("BENCH_DRIVER", "").rpartition(":")
    driver = int(pid) if pid.isdigit() and host == socket.gethostname() else None

    def gone() -> bool:
        return os.getppid() != parent or (driver is not None and not pid_alive(driver))

    if gone():  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while not gone():
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


if __name__ == "__main__":
    main()
    # stdin closed: the driver is done with this worker, and every job it ran is on disk and
    # answered. Leave without the interpreter's teardown (after a sweep's jobs, torch's takes
    # 0.3-0.6 s, which the run's clock would pay while the driver waits for the exit).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
