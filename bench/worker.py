"""A worker process: runs jobs sent by the driver one at a time, on one device slot.

Protocol: one JSON object per line. The driver writes jobs to the worker's stdin; the worker
answers on the original stdout (``{"ready": ...}`` once, then one reply per job). Everything
the job code prints goes to stderr, which the driver sends to the slot's log file.
The driver sets ``BENCH_DEVICE``, ``CUDA_VISIBLE_DEVICES`` and the thread counts before start.

Testing hook (fault injection, documented in docs/architecture.md): ``BENCH_CRASH_ON=<key prefix>``
makes the worker exit abruptly when it starts a job whose key has that prefix.
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
    except Exception as e:  # reported to the driver, which stops the sweep
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return
    send({"ready": True, "pid": os.getpid(), "startup": time.perf_counter() - t0, "device": str(device)})
    crash_on = os.environ.get("BENCH_CRASH_ON")
    for line in sys.stdin:
        job = json.loads(line)
        if crash_on and job["key"].startswith(crash_on):
            os._exit(137)
        start = time.perf_counter()
        try:
            result = RUNNERS[job["kind"]](job, device)
            send({"key": job["key"], "status": "ok", "score": result.get("score"),
                  "seconds": time.perf_counter() - start})
        except Exception as e:
            traceback.print_exc()
            send({"key": job["key"], "status": "failed", "error": f"{type(e).__name__}: {e}",
                  "seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
