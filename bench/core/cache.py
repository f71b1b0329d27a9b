"""Checked data caches: named arrays stored as one .npz that carries its own digest.

Everything derived under the cache dir (digits and CIFAR-10 split arrays, tokenized GLUE, the LM's
BPE tokenizer, augmentation runs) and teachers' outputs on augmented sets is written with
``save_arrays``: atomically (temp file, fsync, rename) and with an entry ``__sha256__``, a sha256
over every other entry's name, dtype, shape and bytes, written in the same file so that data and
digest cannot disagree after a crash. ``load_arrays`` returns None for a missing file and, with a
one-line warning, for one that cannot be read (truncated), whose digest differs (altered) or that
has none (written before digests): the caller then builds it again, so a damaged cache costs one
rebuild instead of failing every job or giving a silently wrong score.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.files import atomic_write_bytes

log = logging.getLogger(__name__)

DIGEST = "__sha256__"


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays' names, dtypes, shapes and bytes (in name order), not over the zip
    container, whose timestamps differ between two writes of the same data."""
    h = hashlib.sha256()
    for name in sorted(k for k in arrays if k != DIGEST):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8).data)  # .data: numpy's stubs give ndarray a buffer only on Python >= 3.12
    return h.hexdigest()


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically store named arrays and their digest as one .npz (read back with ``load_arrays``)."""

    buf = io.BytesIO()
    named: dict[str, Any] = {**arrays, DIGEST: np.array(arrays_digest(arrays))}  # Any: savez's own allow_pickle
    np.savez(buf, **named)
    atomic_write_bytes(path, buf.getvalue())


def cache_problem(path: str | Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(the arrays, None) for a sound cache file, (None, None) for a missing one, else (None, what is wrong)."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"
    stored = arrays.pop(DIGEST, None)
    if stored is None:
        return None, "no digest (written by an older version)"
    if str(stored) != arrays_digest(arrays):
        return None, "altered (its contents do not match its sha256)"
    return arrays, None


def load_arrays(path: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of a sound cache file, or None (missing, or damaged: then a warning) to rebuild it."""
    arrays, problem = cache_problem(path)
    if problem is not None:
        log.warning("%s: damaged cache, %s; it is built again", path, problem)
    return arrays
