"""The numerics version: which numbers this bench computes for a job, beyond what its key says.

A job's key is its config (``core.keys``): what is computed. Code that computes the same config
differently (a loss written another way, a step taken in another order, a random stream drawn at
another point) changes scores without changing any key, so records of two versions would mix in one
sweep unnoticed. ``NUMERICS_VERSION`` names the numbers of this version of bench: one tiny real run
per method, at 1 torch thread on the CPU (``tests/test_golden.py``, its values in
``tests/golden.json``), is pinned bit for bit, and **any change that moves one of them bumps
it** (and re-pins them); a change that moves none keeps it, whatever else it touches.

Every job record and every teacher's meta.json holds the version that made it as ``numerics``.
Records and teachers written before the field existed have none: their version is ``UNKNOWN``
(``numerics_of``). Reports read records of any version. ``bench run`` refuses to resume a sweep
whose finished records or stored teachers hold another version, unknown included
(``driver.run.check_numerics``), unless ``--mixed-numerics``; ``bench rerun`` says when the record
it reruns holds another one.

Version 1: the numbers of bench as of 2026-12-08 (torch 2.13.0, x86-64 with AVX-512, where
tests/golden.json was pinned); records made before then hold no version.
"""

from __future__ import annotations

from typing import Any

NUMERICS_VERSION = 1
UNKNOWN = "unknown"  # the version of a record or teacher written before ``numerics`` was stamped


def numerics_of(stamped: dict[str, Any]) -> int | str:
    """The numerics version a record or teacher meta.json was made with; ``UNKNOWN`` without one."""
    return stamped.get("numerics", UNKNOWN)
