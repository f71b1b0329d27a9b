"""Files that readers can trust: atomic writes that respect the umask, bounded JSON reads, temp files
of dead processes, folder locks.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Reading a JSON file (a record, a teacher's meta.json) is bounded: real records are a few kB (a
# digits record 2.6 kB; predictions of CIFAR-10's 10,000 test images encode to about 6 kB; a failed
# record's tracebacks some kB), so 16 MiB is far above any of them and far below memory trouble.
MAX_JSON_BYTES = 16 << 20


MAX_JSON_DEPTH = 64  # a record nests 5 deep; a deeper file is not a record (and json would recurse)


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, racing other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the umask (for files a library creates 0600)."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it, even after a kill. Its mode is
    what ``open`` would give (0666 less the umask), not mkstemp's 0600, so that colleagues sharing
    the output folders can read it. An OSError (a full disk, a missing permission) is raised again
    naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def temp_owner(path: Path) -> int | None:
    """The process id that a temp file of ``atomic_write_bytes`` belongs to."""
    try:
        return int(path.name.rsplit(".", 3)[-2].split("-")[0])
    except (IndexError, ValueError):
        return None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def _json_depth(text: str) -> int:
    """How deep arrays and objects nest in a JSON text (strings skipped), without recursing."""
    import re
    from itertools import accumulate

    brackets = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    steps = [1 if c in "[{" else -1 for c in brackets if c in "[]{}"]
    return max(accumulate(steps), default=0)


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file that must be a regular file (not a symbolic link, FIFO, device or folder: such
    a file could block or never end), of at most ``max_bytes`` and nested at most MAX_JSON_DEPTH
    deep. Raises OSError, or ValueError saying what is wrong."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError("a symbolic link, expected a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file (a folder, FIFO or device)")
        if info.st_size > max_bytes:
            raise ValueError(f"{info.st_size} bytes, more than the {max_bytes} a JSON file of bench may hold")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"more than the {max_bytes} bytes a JSON file of bench may hold")
    return loads_bounded(data.decode("utf-8"))


def loads_bounded(text: str) -> Any:
    """``json.loads`` of a text nested at most MAX_JSON_DEPTH deep (deeper: ValueError, not a
    recursion error)."""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path, min_age: float = 0.0) -> list[Path]:
    """Delete under ``folder`` (recursively) the temporaries a killed process left: files of
    ``atomic_write_bytes`` (``.<name>.<pid>-<random>.tmp``) and teacher folders being built
    (``.<key>.tmp-<pid>``) whose process is gone and that are older than ``min_age`` seconds
    (for roots shared with runs on other hosts, whose processes this host cannot see). Returns
    what was removed. A file of a live process is never touched."""
    import shutil

    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    for top, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if not name.startswith("."):
                continue
            path = Path(top) / name
            if name.endswith(".tmp") and name in files:
                pid = temp_owner(path)
            elif ".tmp-" in name and name in dirs and name.rsplit("-", 1)[-1].isdigit():
                pid = int(name.rsplit("-", 1)[-1])
            else:
                continue
            try:
                old = now - path.lstat().st_mtime >= min_age
            except FileNotFoundError:
                continue
            if pid is not None and pid_alive(pid) or not old:
                continue
            if name in dirs:
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` (an flock, released by the kernel if the holder dies) while writing
    ``folder``; a second writer says one line and waits for the first."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            log.info("waiting: another %s is writing %s (%s)", what, folder, f.read().strip() or "pid unknown")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
