"""Diagnostics go through ``logging``, results to stdout.

Every module that reports something on the side (a damaged file moved away, a lock taken over, a
status line of ``bench run``) writes to its own logger, ``logging.getLogger(__name__)``, under the
``bench`` logger. Importing bench configures nothing: only bench's own processes, the command line
(``bench.cli.main``) and the worker (``bench.engines.worker``), call ``configure``, which puts one
handler on the ``bench`` logger, never on the root logger or another library's. A program that
uses bench as a library sees its messages through its own logging setup.

The lines look as they always did: ``warning: ...`` for warnings, the bare message otherwise.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "bench"


class _Lines(logging.Formatter):
    """One line per message (plus a traceback if one is attached), warnings prefixed ``warning:``."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"warning: {text}" if record.levelno == logging.WARNING else text


class _Stderr(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a message is written (so a redirected or
    captured stderr gets the message), not as it was when the handler was made."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; stderr is always the current one
        pass


def configure(level: int = logging.INFO) -> logging.Logger:
    """Show bench's messages at ``level`` and above on stderr: one handler on the ``bench`` logger
    (a handler set by an earlier call is replaced, so calling it again never doubles lines)."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
        logger.removeHandler(old)
    handler = _Stderr()
    handler.setFormatter(_Lines())
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
