"""Stopping the driver on SIGINT / SIGTERM: the handler raises ``Interrupted`` in the main thread,
the engines stop their workers on the way out (``finally`` blocks), the sweep lock is released and
the CLI prints one line and exits 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).

Libraries may replace the SIGINT handler when they are imported (dask-jobqueue 0.9.0 installs its
own, which calls ``sys.exit()``: Ctrl-C ended ``bench run`` with exit code 0 and the sweep
unfinished, and so did a SIGINT that was meant to be ignored, as in ``bench run ... &`` from a
script), so the engines call ``install`` again once their libraries are imported.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The driver received SIGINT or SIGTERM (a BaseException, so no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.code = 128 + signum


_IGNORED: set[int] | None = None  # signals ignored when the process started (e.g. SIGINT under `nohup ... &`)
_STOPPING = False


def _handler(signum: int, frame) -> None:
    global _STOPPING
    # the first signal stops the run; more while it stops (an impatient Ctrl-C) are ignored
    _STOPPING = True
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def install() -> None:
    """Make SIGINT and SIGTERM raise ``Interrupted`` in the main thread (no-op in other threads,
    where Python cannot install handlers, and once the run is stopping); call it again after
    importing a library that replaces them. A signal ignored when the process started stays ignored."""
    global _IGNORED
    if threading.current_thread() is not threading.main_thread() or _STOPPING:
        return
    if _IGNORED is None:
        _IGNORED = {s for s in SIGNALS if signal.getsignal(s) is signal.SIG_IGN}
    for s in SIGNALS:  # an ignored one is ignored again: the library's handler would exit 0
        signal.signal(s, signal.SIG_IGN if s in _IGNORED else _handler)
