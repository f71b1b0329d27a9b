"""The local device queue: one worker process per device slot, jobs dispatched as soon as their
teachers exist, failures retried and recorded without stopping the sweep (only a slot whose
worker reports that it cannot work there, e.g. a missing GPU, stops it; a worker that dies while
starting, idle or mid-job costs at most one attempt of one job and is replaced).

Why processes we manage ourselves (and not joblib/loky): a job that crashes its process, or
leaks GPU memory, must cost only that job. A worker that dies is replaced; a worker is also
replaced after a failed job (to free whatever it held) and, optionally, every M jobs.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.config import parse_device
from bench.core.contracts import JobPayload
from bench.core.errors import UserError


@dataclass(frozen=True)
class Slot:
    """One place a job can run: a device and how many threads the job may use."""

    name: str
    device: str
    threads: int

    def env(self) -> dict[str, str]:
        kind, index = parse_device(self.device)
        t = str(self.threads)
        env = {
            "BENCH_DEVICE": self.device,
            "BENCH_THREADS": t,
            "OMP_NUM_THREADS": t,
            "MKL_NUM_THREADS": t,
            "OPENBLAS_NUM_THREADS": t,
            "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "" if kind == "cpu" else str(index),
        }
        return env


def make_slots(devices: tuple[str, ...], jobs_per_device: int, threads_per_job: int = 0) -> list[Slot]:
    """Slots for each device x jobs_per_device; threads default to the cores shared out evenly."""
    n = len(devices) * jobs_per_device
    threads = threads_per_job or max(1, (os.cpu_count() or 1) // n)
    return [Slot(f"{d}#{j}", d, threads) for d in devices for j in range(jobs_per_device)]


@dataclass
class Item:
    """A job in the queue: its payload for the worker and the keys it waits for."""

    key: str
    kind: str
    payload: JobPayload
    deps: tuple = ()
    attempts: int = 0
    ready_at: float = 0.0
    errors: list = field(default_factory=list)
    slot: str | None = None  # where the last attempt ran
    lost: int = 0  # times the worker was found dead before receiving it
    traceback: str | None = None  # of the last failed attempt, where the job raised
    failure: str | None = None  # kind of the last failure: error, oom, diverged, crash, timeout
    step: int | None = None  # diverged: the first step with a non-finite loss
    unmet: int = 0  # dependencies not done yet (kept by the Scheduler)
    members: tuple = ()  # a stack (run.stack): its distillation items, each settled on its own
    seconds: float | None = None  # the last attempt's own seconds, from the worker (one-off start-up excluded)

    def jobs(self) -> list[Item]:
        """The jobs this item stands for: a stack's members, else itself."""
        return list(self.members) or [self]


def member_replies(item: Item, reply: dict, is_done: Callable[[Item], bool]) -> dict:
    """How each member of a stack ended: the worker's reply per member or, when the stack failed as
    a whole (crash, timeout, an error before its members were settled), ok for the members whose
    result was written (``is_done``) and nothing for the others, which then run alone."""
    if not item.members:
        return {}
    if reply.get("members"):
        return reply["members"]
    return {m.key: {"status": "ok"} for m in item.members if is_done(m)}


def attempt_timeout(item: Item, timeout: float) -> float:
    """``run.timeout`` is per job: a stack of n jobs gets n times as long."""
    return timeout * max(1, len(item.members))


class WorkerError(Exception):
    """The worker process died, timed out or could not start."""

    kind = "crash"


RETRY_ON = ("error", "crash", "timeout", "oom")  # failure kinds retried by default; "diverged" is deterministic
START_TIMEOUT = 600.0  # seconds a worker may take to import torch and report ready (a loaded machine is slow)


class WorkerGone(WorkerError):
    """The worker was dead before it received the job (the job did not run)."""


class WorkerUnusable(WorkerError):
    """The worker started and reported that it cannot work on its slot (e.g. ``cuda:1`` on a machine
    without that GPU): a setup error that stops the sweep, unlike a worker that dies while starting."""


class Worker:
    """A worker subprocess bound to one slot."""

    def __init__(self, slot: Slot, log_path: Path, extra_env: dict | None = None):
        self.slot, self.log_path, self.extra_env = slot, log_path, extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.buf = b""
        self.jobs = 0
        self.closed = False  # set by close(): no process may be started any more
        self.ready = False  # its ready line was read (start)
        self.early = False  # spawned, start not yet called: a death before then is a death while starting
        self.spawned_at: float | None = None
        self._lock = threading.Lock()

    def spawn(self) -> None:
        """Start the process without waiting for its ready line (``start`` reads it), so that its
        start-up (interpreter, torch) overlaps the driver's own work; its spawn time is kept
        (``spawned_at``): the run's clock starts there."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.spawned_at = time.time()
        env = {
            **os.environ,
            **self.slot.env(),
            **self.extra_env,
            "BENCH_PARENT_PID": str(os.getpid()),
            "BENCH_SPAWNED_AT": repr(self.spawned_at),  # the worker's start-up is measured from here
        }
        with self._lock:  # close() from another thread either sees this process or prevents it
            if self.closed:
                raise WorkerError("the run is stopping")
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.engines.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    bufsize=0,
                )
        self.buf, self.jobs, self.ready, self.early = b"", 0, False, True

    def start(self) -> None:
        """Start the process (unless ``spawn`` did and it lives) and wait for its ready line. Raises
        WorkerUnusable when it reports that it cannot work on the slot, WorkerError (crash or
        timeout) when it dies or hangs while starting (a process ``spawn`` started ahead and found
        dead here died while starting: its job pays the attempt, as it would have)."""
        if self.proc is not None and self.early and self.proc.poll() is not None:
            self.early = False  # spawned ahead and dead before its ready line: it died while starting
            raise WorkerError(f"worker process died (exit code {self.proc.returncode}); see {self.log_path}")
        if self.proc is None or self.proc.poll() is not None:
            self.spawn()
        self.early = False
        hello = self._read(timeout=START_TIMEOUT)
        if not hello.get("ready"):
            self.stop()
            raise WorkerUnusable(f"worker for {self.slot.device} could not start: {hello.get('error')}")
        self.ready = True

    def usable(self) -> bool:
        """Whether the process is started, ready and alive (else ``start`` it before a job)."""
        return self.ready and self.proc is not None and self.proc.poll() is None

    def _read(self, timeout: float | None, wanted: Callable[[], bool] | None = None) -> dict:
        """The next line from the worker; kills it when ``timeout`` passes or, checked every second,
        when ``wanted()`` turns False (nobody waits for the reply any more)."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None  # only called after start(), which pipes stdout
        fd = proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wanted is not None:
                wait = 1.0 if wait is None else min(wait, 1.0)
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                if wanted is not None and (deadline is None or time.monotonic() < deadline):
                    if wanted():
                        continue
                    self.kill()
                    raise WorkerError("stopped: the run that sent this job is gone")
                self.kill()
                error = WorkerError(f"timed out after {timeout:g} s")
                error.kind = "timeout"
                raise error
            chunk = os.read(fd, 65536)
            if not chunk:
                code = proc.wait()
                raise WorkerError(f"worker process died (exit code {code}); see {self.log_path}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, payload: JobPayload, timeout: float | None, wanted: Callable[[], bool] | None = None) -> dict:
        proc = self.proc
        assert proc is not None and proc.stdin is not None  # only called after start(), which pipes stdin
        try:
            proc.stdin.write((json.dumps(payload.to_wire()) + "\n").encode())
        except (BrokenPipeError, OSError):
            code = proc.wait()
            raise WorkerGone(f"worker process died (exit code {code}); see {self.log_path}") from None
        self.jobs += 1
        start = time.monotonic()
        try:
            ack = self._read(timeout, wanted)  # the worker acknowledges a job before running it
        except WorkerError as e:
            if e.kind != "crash":
                raise
            raise WorkerGone(str(e)) from None  # died before it read the job: the job did not run
        if "started" not in ack:
            return ack
        return self._read(None if timeout is None else max(0.0, timeout - (time.monotonic() - start)), wanted)

    def kill(self) -> None:
        proc = self.proc
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Kill the process now and start none any more (the run is stopping; safe from any thread)."""
        with self._lock:
            self.closed = True
            self.kill()

    def stop(self) -> None:
        proc = self.proc
        if proc and proc.poll() is None:
            try:
                if proc.stdin is not None:  # always piped by start()
                    proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self.proc, self.ready = None, False


def run_job(
    worker: Worker, payload: JobPayload, timeout: float | None, wanted: Callable[[], bool] | None = None
) -> dict:
    """Send one job to a started worker and return its reply; a worker that dies or times out
    during the job (or whose job is no longer ``wanted``) is killed and the reply says so (``kind``
    crash or timeout), as does any other error of the exchange. Raises WorkerGone when the worker
    was dead before the job reached it."""
    try:
        return worker.run(payload, timeout, wanted)
    except WorkerGone:
        raise
    except WorkerError as e:
        worker.kill()
        return {"status": "failed", "error": str(e), "kind": e.kind}
    except Exception as e:  # anything unexpected costs this attempt only
        worker.kill()
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "kind": "error"}


@dataclass
class QueueResult:
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # items out of attempts
    skipped: list = field(default_factory=list)  # items whose dependency failed
    wall: float = 0.0
    unstacked: list = field(default_factory=list)  # (stack key, error): stacks that failed as a whole


class Scheduler:
    """Thread-safe state of one run: pending (waiting for deps), ready, running, finished."""

    def __init__(
        self,
        items: list[Item],
        done_keys: set[str],
        retries: int,
        on_final_failure: Callable[[Item], None],
        progress: Callable[[dict], None],
        retry_on: tuple[str, ...] = RETRY_ON,
    ):
        self.lock = threading.Condition()
        self.retries, self.on_final_failure, self.progress = retries, on_final_failure, progress
        self.retry_on = set(retry_on)
        self.done_keys = set(done_keys)
        self.pending: dict[str, Item] = {}  # waiting for dependencies, by key
        self.dependants: dict[str, list[Item]] = {}  # key -> pending items waiting for it
        self.ready: deque[Item] = deque()
        self.running = 0
        self.stopped = False
        self.result = QueueResult()
        self.total = sum(len(item.jobs()) for item in items)
        self.left = Counter(j.kind for item in items for j in item.jobs())  # by kind: jobs not finished (for the ETA)
        self.measured: dict[str, list[float]] = {}  # by kind: the seconds of jobs done (for the ETA)
        now = time.time()
        for item in items:
            unmet = [d for d in item.deps if d not in self.done_keys]
            item.unmet = len(unmet)
            if not unmet:
                item.ready_at = now
                self.ready.append(item)
                continue
            self.pending[item.key] = item
            for d in unmet:
                self.dependants.setdefault(d, []).append(item)

    def _done(self, key: str) -> None:
        """``key`` finished: its dependants with nothing else to wait for become ready (O(dependants))."""
        now = time.time()
        for item in self.dependants.pop(key, []):
            item.unmet -= 1
            if item.unmet == 0 and self.pending.pop(item.key, None) is not None:
                item.ready_at = now
                self.ready.append(item)

    def _failed(self, key: str) -> None:
        """``key`` failed for good: everything that waits for it, directly or not, is skipped."""
        stack = [key]
        while stack:
            for item in self.dependants.pop(stack.pop(), []):
                if self.pending.pop(item.key, None) is not None:
                    self.result.skipped.extend(item.jobs())
                    stack.append(item.key)

    def counts(self) -> dict:
        """What the progress hook receives: the four counts, and per kind of job what is left and
        the seconds measured so far (``phases``, for an ETA: ``driver.progress.estimate_eta``)."""
        r = self.result
        skipped = Counter(item.kind for item in r.skipped)
        return {
            "done": len(r.done),
            "failed": len(r.failed) + len(r.skipped),
            "running": self.running,
            "remaining": sum(len(i.jobs()) for i in (*self.pending.values(), *self.ready)),
            "phases": {
                kind: {"left": n - skipped[kind], "seconds": list(self.measured.get(kind, ()))}
                for kind, n in self.left.items()
            },
        }

    def next(self) -> Item | None:
        """The next ready item (blocking while running jobs may release more), or None when all is over."""
        with self.lock:
            while not self.ready or self.stopped:
                if self.stopped:
                    return None
                if self.running == 0:
                    # nothing runs, so nothing pending can become ready: its dependencies are gone
                    self.result.skipped.extend(j for i in self.pending.values() for j in i.jobs())
                    self.pending = {}
                    return None
                self.lock.wait(timeout=1.0)
            self.running += 1
            item = self.ready.popleft()
            counts = self.counts()
        self.progress(counts)  # the running count includes the job just taken
        return item

    def take_ready(self) -> list[Item]:
        """Every ready item at once, counted as running (for engines that queue work themselves)."""
        with self.lock:
            if self.stopped:
                return []
            taken = list(self.ready)
            self.ready.clear()
            self.running += len(taken)
            counts = self.counts()
        if taken:
            self.progress(counts)
        return taken

    def close(self) -> None:
        """End of the run: whatever still waits for a dependency will not run."""
        with self.lock:
            self.result.skipped.extend(j for i in self.pending.values() for j in i.jobs())
            self.pending = {}

    def give_back(self, item: Item) -> None:
        """Return a taken item unrun (its attempt did not happen)."""
        with self.lock:
            self.running -= 1
            self.ready.appendleft(item)
            self.lock.notify_all()

    def stop(self) -> None:
        """Hand out no more items (running ones finish)."""
        with self.lock:
            self.stopped = True
            self.lock.notify_all()

    def finish(self, item: Item, ok: bool, error: str | None = None, members: dict | None = None) -> None:
        """Record an attempt's outcome: done, queued again, or failed for good (then reported). A
        stack's members are settled one by one from ``members`` (``member_replies``); a member
        without a reply goes back to the queue alone, its attempts untouched: a stack that fails
        as a whole costs none of its jobs an attempt, and is not tried again as a stack."""
        if not item.members:
            with self.lock:
                self.running -= 1
            return self._settle(item, ok, error)
        replies = members or {}
        with self.lock:
            self.running -= 1
            if not ok:
                self.result.unstacked.append((item.key, error))
            now = time.time()
            for m in item.members:
                if m.key not in replies:
                    m.ready_at = now
                    self.ready.append(m)
            self.lock.notify_all()
        for m in item.members:
            reply = replies.get(m.key)
            if reply is None:
                continue
            m.seconds = None if item.seconds is None else item.seconds / len(item.members)  # its share, for the ETA
            m.attempts += 1
            m.slot, m.traceback, m.failure, m.step = (
                item.slot,
                reply.get("traceback"),
                reply.get("kind"),
                reply.get("step"),
            )
            self._settle(m, reply["status"] == "ok", reply.get("error"))

    def _settle(self, item: Item, ok: bool, error: str | None) -> None:
        """One job's attempt is over (no longer counted as running): done, queued again, or failed for good."""
        final_failure = False
        with self.lock:
            if ok:
                self.done_keys.add(item.key)
                self.result.done.append(item)
                self.left[item.kind] -= 1
                if item.seconds is not None:
                    self.measured.setdefault(item.kind, []).append(item.seconds)
                self._done(item.key)
            else:
                item.errors.append(error)
                if item.attempts <= self.retries and (item.failure or "error") in self.retry_on:
                    item.ready_at = time.time()
                    self.ready.append(item)
                else:
                    self.result.failed.append(item)
                    self.left[item.kind] -= 1
                    self._failed(item.key)
                    final_failure = True
            self.lock.notify_all()
        if final_failure:
            self.on_final_failure(item)
        with self.lock:
            counts = self.counts()
        self.progress(counts)


def worker_log(log_dir: Path, slot: Slot) -> Path:
    """The log file of a slot's worker (its stderr)."""
    return log_dir / f"worker-{slot.name.replace(':', '').replace('#', '-')}.log"


def spawn_workers(slots: list[Slot], log_dir: Path) -> dict[str, Worker]:
    """One worker per slot, its process started now (``Worker.spawn``), for ``run_queue``'s
    ``spawned``: the driver plans while they import torch."""
    workers = {s.name: Worker(s, worker_log(log_dir, s)) for s in slots}
    for w in workers.values():
        w.spawn()
    return workers


def run_queue(
    items: list[Item],
    slots: list[Slot],
    log_dir: Path,
    retries: int,
    timeout: float,
    max_jobs_per_worker: int,
    on_final_failure: Callable[[Item], None],
    progress: Callable[[dict], None],
    done_keys: AbstractSet[str] = frozenset(),
    is_done: Callable[[Item], bool] = lambda item: False,
    retry_on: tuple[str, ...] = RETRY_ON,
    spawned: dict[str, Worker] | None = None,
) -> QueueResult:
    """Run every item on the slots; returns what finished, failed and was skipped.

    ``spawned``: workers the driver started already (``spawn_workers``, by slot name); the run's
    clock (``QueueResult.wall``) starts at the first one's spawn, so their start-up is in it.

    ``is_done(item)`` tells whether a job whose reply was lost (worker killed or timed out just
    after it finished) did leave its result: then it counts as done, not as a failed attempt.
    A worker that dies or hangs while starting costs the job it was started for one attempt (kind
    crash or timeout), as a death mid-job does; a worker found dead when a job is sent to it is
    replaced and the job keeps its attempts. A slot whose worker reports that it cannot work there
    (WorkerUnusable, e.g. a missing GPU) stops the sweep (raised as a UserError); so does an
    unexpected error in the driver, after the running jobs end. Any exception in the calling
    thread (``bench.core.interrupt.Interrupted`` on SIGINT / SIGTERM) kills every worker at once, records
    nothing for the jobs it cut short, and propagates. Nothing finished is lost.
    """
    workers = {s.name: (spawned or {}).get(s.name) or Worker(s, worker_log(log_dir, s)) for s in slots}
    start = min([w.spawned_at for w in workers.values() if w.spawned_at is not None], default=time.time())
    sched = Scheduler(items, set(done_keys), retries, on_final_failure, progress, retry_on)
    fatal: list[BaseException] = []
    stopping = threading.Event()

    def attempt(worker: Worker, slot: Slot, item: Item) -> tuple[bool, str | None, dict]:
        item.attempts += 1
        item.slot = slot.name
        if not worker.usable():
            try:
                worker.start()
            except WorkerUnusable:
                item.attempts -= 1
                raise
            except WorkerError as e:  # died (OOM killer while importing torch ...) or hung while starting
                worker.kill()
                item.traceback, item.failure, item.step = None, e.kind, None
                return False, f"while starting: {e}", {}
        payload = item.payload.dispatched(item.attempts, slot.name, slot.device, max(0.0, time.time() - item.ready_at))
        try:
            reply = run_job(worker, payload, attempt_timeout(item, timeout) or None)
        except WorkerGone:
            item.attempts -= 1  # the job never reached the worker
            raise
        item.traceback, item.failure, item.step = reply.get("traceback"), reply.get("kind"), reply.get("step")
        item.seconds = reply.get("seconds")
        return reply["status"] == "ok", reply.get("error"), member_replies(item, reply, is_done)

    def slot_loop(slot: Slot) -> None:
        worker = workers[slot.name]
        item = None
        try:
            while not fatal and not stopping.is_set():
                item = sched.next()
                if item is None:
                    return
                members: dict = {}
                try:
                    ok, error, members = attempt(worker, slot, item)
                except WorkerGone:  # died while idle: start a fresh one, the job keeps its attempts
                    worker.stop()
                    item.lost += 1
                    if item.lost <= 3:
                        sched.give_back(item)
                        item = None
                        continue
                    ok, error = False, "worker process died before the job started, 4 times"
                if stopping.is_set():  # the run was interrupted: this attempt's outcome is not recorded
                    return
                if not ok and not item.members and is_done(item):
                    ok, error = True, None
                if not ok or (max_jobs_per_worker and worker.jobs >= max_jobs_per_worker):
                    worker.stop()  # a fresh process for the next job
                finished, item = item, None
                sched.finish(finished, ok, error, members)
        except BaseException as e:
            fatal.append(e)
            if item is not None:
                sched.give_back(item)
            sched.stop()
        finally:
            worker.stop()

    threads = [threading.Thread(target=slot_loop, args=(s,), daemon=True) for s in slots]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
    except BaseException:  # SIGINT / SIGTERM (bench.core.interrupt) or any driver error: no job outlives it
        stopping.set()
        sched.stop()
        for w in workers.values():
            w.close()
        for t in threads:
            t.join(timeout=30)
        raise
    if fatal:
        if isinstance(fatal[0], WorkerUnusable):
            raise UserError(str(fatal[0]))
        raise fatal[0]
    r = sched.result
    assert len(r.done) + len(r.failed) + len(r.skipped) == sched.total, "queue lost track of a job"
    r.wall = time.time() - start
    return r
