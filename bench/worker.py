"""A worker process: runs jobs sent by the driver one at a time, on one device slot.

Protocol: one JSON object per line. The driver writes jobs to the worker's stdin; the worker
answers on the original stdout (``{"ready": ...}`` once, then one reply per job). Everything
the job code prints goes to stderr, which the driver sends to the slot's log file.
The driver sets ``BENCH_DEVICE``, ``CUDA_VISIBLE_DEVICES`` and the thread counts before start.

Testing hooks (fault injection, documented in docs/architecture.md): ``BENCH_CRASH_ON=<key prefix>``
makes the worker exit abruptly when it starts a job whose key has that prefix;
``BENCH_RAISE_ON=<prefix>[,<prefix>...]`` makes such jobs raise, ``BENCH_OOM_ON`` makes them
raise torch's out-of-memory error. ``BENCH_EXIT_WITH_PARENT=1`` (set by the
Dask engine) ends the worker, mid-job too, when the process that started it dies, so a killed
Dask worker leaves no orphan holding its GPU while the job reruns elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def resolve_device(name: str):
    """The torch device this worker uses for slot device ``name`` ('cpu' or 'cuda:N')."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda:0")  # CUDA_VISIBLE_DEVICES holds the slot's GPU only
    if os.environ.get("BENCH_SIMULATE_GPU") == "1":
        return torch.device("cpu")
    raise RuntimeError(f"device {name} requested but torch sees no CUDA device "
                       f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")


def main() -> None:
    t0 = time.perf_counter()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
        device = resolve_device(os.environ.get("BENCH_DEVICE", "cpu"))
        from bench.jobs import RUNNERS
        from bench.training import set_determinism
    except Exception as e:  # reported to the driver, which stops the sweep
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return
    if os.environ.get("BENCH_EXIT_WITH_PARENT") == "1":
        _exit_with_parent()
    send({"ready": True, "pid": os.getpid(), "startup": time.perf_counter() - t0, "device": str(device)})
    crash_on = os.environ.get("BENCH_CRASH_ON")
    raise_on = tuple(p for p in os.environ.get("BENCH_RAISE_ON", "").split(",") if p)
    oom_on = tuple(p for p in os.environ.get("BENCH_OOM_ON", "").split(",") if p)
    for line in sys.stdin:
        job = json.loads(line)
        if crash_on and job["key"].startswith(crash_on):
            os._exit(137)
        start = time.perf_counter()
        try:
            if raise_on and job["key"].startswith(raise_on):
                raise RuntimeError("injected fault (BENCH_RAISE_ON)")
            if oom_on and job["key"].startswith(oom_on):
                raise torch.OutOfMemoryError("simulated out of memory (BENCH_OOM_ON)")
            set_determinism(bool(job.get("deterministic")))
            result = RUNNERS[job["kind"]](job, device)
            send({"key": job["key"], "status": "ok", "score": result.get("score"),
                  "seconds": time.perf_counter() - start})
        except Exception as e:
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            send({"key": job["key"], "status": "failed", "error": f"{type(e).__name__}: {e}", "kind": failure_kind(e),
                  "step": getattr(e, "step", None), "traceback": tb, "seconds": time.perf_counter() - start})


def failure_kind(e: BaseException) -> str:
    """What went wrong, for the retry policy (``run.retry_on``): diverged, oom, network or error."""
    from bench.errors import is_network_error
    from bench.training import Diverged

    if isinstance(e, Diverged):
        return "diverged"
    if is_network_error(e):  # the hub unreachable: retrying costs minutes and repeats it
        return "network"
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower():
        return "oom"
    return "error"


def _exit_with_parent() -> None:
    """Exit at once when the parent process is gone (this process is then re-parented)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


if __name__ == "__main__":
    main()
