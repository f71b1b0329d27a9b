"""The progress bar of `bench run` and its ETA, estimated per phase from measured job times.

A sweep has phases whose jobs differ by orders of magnitude (a BERT teacher against a small
student), and a new worker's first job used to carry its start-up: a rate over all jobs, as
tqdm's own ETA, extrapolated the first teacher's wall to every student (48 min shown for a 5 min
sweep). Here each kind of job (teacher, augment, teacher-outputs, distill) is estimated from the
mean of its own finished jobs' seconds, as the workers measured them (one-off start-up and
warm-up excluded: ``engines.worker``), and the ETA is unknown while a kind with work left has
no measurement yet.
"""

from __future__ import annotations

import sys


def estimate_eta(phases: dict[str, dict], parallel: int) -> float | None:
    """Seconds left: for each kind of job, the jobs left (``left``, the running ones included)
    times the mean of its measured ``seconds``, summed and shared by ``parallel`` slots. None
    while a kind with jobs left has no measured job yet (no honest guess: a teacher says little
    about a student)."""
    work = 0.0
    for phase in phases.values():
        left, seconds = phase["left"], phase["seconds"]
        if left <= 0:
            continue
        if not seconds:
            return None
        work += left * sum(seconds) / len(seconds)
    return work / max(1, parallel)


def format_eta(seconds: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s``, or ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressBar:
    """A tqdm bar over the run's jobs whose postfix holds the counts and the per-phase ETA (tqdm's
    own rate-based remaining time is left out of its format)."""

    FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, parallel: int):
        from tqdm import tqdm  # lazy: only `bench run` draws a bar

        tty = sys.stderr.isatty()
        self.parallel = parallel
        self.bar = tqdm(
            total=total,
            unit="job",
            dynamic_ncols=True,
            mininterval=0.5 if tty else 30.0,
            file=sys.stderr,
            disable=total == 0,
            bar_format=self.FORMAT,
        )

    def update(self, counts: dict) -> None:
        """Show the scheduler's ``counts`` (``engines.queue.Scheduler.counts``)."""
        shown = {k: counts[k] for k in ("done", "failed", "running", "remaining")}
        shown["eta"] = format_eta(estimate_eta(counts.get("phases", {}), self.parallel))
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(counts["done"] + counts["failed"] - self.bar.n)

    def close(self) -> None:
        self.bar.close()
