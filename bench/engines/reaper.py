"""The Slurm reaper: cancels a driver's worker jobs once the driver is gone, however it ends.

dask-jobqueue cancels the worker jobs it knows when the driver closes its cluster, but a driver
that is killed (SIGKILL, the OOM killer, a lost login node session) closes nothing: its pending
worker jobs stay queued and start hours later, only to fail when they find no scheduler. So the
Slurm engine starts this process first, in a session of its own, with a pipe from the driver as
its standard input. The pipe ends when the driver does, for any reason; the reaper then runs
``scancel --name NAME`` for the worker jobs (all named after this driver) a few times over some
seconds, catching a submission that was on its way when the driver died, and exits.

Run as ``python -m bench.engines.reaper NAME``; started by ``bench.engines.cluster.slurm_client``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

ROUNDS = (0.0, 2.0, 8.0)  # seconds after the driver's end at which to cancel again


def cancel(name: str) -> None:
    """Cancel every job of this user named ``name``, pending or running (errors ignored: the
    controller may be briefly unreachable, and the next round tries again)."""
    try:
        subprocess.run(
            ["scancel", "--name", name, "--user", str(os.getuid())],
            timeout=30,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0]:
        print("usage: python -m bench.engines.reaper JOB_NAME (reads until its standard input ends)", file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)  # the driver's Ctrl-C or terminal is not the reaper's end
    while sys.stdin.buffer.read(4096):
        pass
    start = time.monotonic()
    for at in ROUNDS:
        time.sleep(max(0.0, start + at - time.monotonic()))
        cancel(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
