"""Energy of one job or teacher: measured where the hardware lets a process read it, otherwise
estimated from a stated power model, always with its source.

Sources, the first that applies:
- ``"nvml"``: a CUDA job whose GPU has NVML's total-energy counter (Volta and later, through the
  optional ``nvidia-ml-py`` package): the counter's rise over the job, divided by the slots
  sharing that GPU (``run.jobs_per_device``: a time share that assumes the other slots were busy
  too, as they are in a sweep), plus the CPU side as below.
- ``"rapl"``: where ``/sys/class/powercap/intel-rapl:*/energy_uj`` is readable: the CPU packages'
  energy rise over the job times this process's share of the machine's busy CPU time in that
  interval (``/proc/stat``), so jobs running side by side are not each charged the whole package.
- ``"estimate"``: CPU seconds x watts per core + resident memory x watts per GiB x wall seconds
  (+ a GPU's board power x wall / slots when its counter cannot be read), the model of Green
  Algorithms (Lannelongue, Grealey & Inouye 2021), with the default figures of ``PowerModel``.

Every figure is multiplied by the data centre's PUE (1.0 unless set) and converted to CO2e with
the carbon intensity the user sets (``[run.energy]``, docs/performance.md). The readers take their
roots as arguments so tests can point them at fake counter files and a fake NVML module.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOULES_PER_KWH = 3.6e6
SOURCES = ("nvml", "rapl", "estimate")
POWERCAP = "/sys/class/powercap"
PROC_STAT = "/proc/stat"


@dataclass(frozen=True)
class PowerModel:
    """The figures of the estimate and the conversions ([run.energy] in a spec).

    Defaults: 10 W per busy core (the TDP per core of common server CPUs is 5-15 W), 0.3725 W per
    GiB of memory (Green Algorithms' figure), 250 W for a GPU whose counter cannot be read (a
    typical data-centre board's power limit), PUE 1.0 (the machine alone), 475 gCO2e per kWh
    (the world's average electricity, IEA 2019, Green Algorithms' default)."""

    watts_per_core: float = 10.0
    watts_per_gib: float = 0.3725
    gpu_watts: float = 250.0
    pue: float = 1.0
    carbon_intensity: float = 475.0  # gCO2e per kWh


@dataclass(frozen=True)
class Reading:
    """The counters at one instant: wall clock, this process's CPU seconds, the machine's busy CPU
    seconds (NaN if unknown), the RAPL packages' micro-joules (None if unreadable) and the GPU's
    NVML milli-joules (None if unreadable)."""

    wall: float
    cpu: float
    machine_cpu: float
    rapl_uj: tuple[int, ...] | None
    nvml_mj: float | None


def rapl_domains(root: str = POWERCAP) -> list[Path]:
    """The readable top-level RAPL package domains (``intel-rapl:N``, not their sub-zones)."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = []
    for d in sorted(base.glob("intel-rapl:*")):
        if d.name.count(":") == 1 and os.access(d / "energy_uj", os.R_OK):
            found.append(d)
    return found


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_rapl(domains: list[Path]) -> tuple[int, ...] | None:
    """Each package's ``energy_uj`` (None if any cannot be read)."""
    values = [_read_int(d / "energy_uj") for d in domains]
    return None if not values or any(v is None for v in values) else tuple(v for v in values if v is not None)


def machine_cpu_seconds(path: str = PROC_STAT) -> float:
    """The machine's busy CPU seconds since boot (all cores; /proc/stat's first line less idle and
    iowait); NaN where there is no /proc/stat."""
    try:
        with open(path) as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def nvml_handle(index: int, module: Any = None) -> Any:
    """(the NVML module, a handle of GPU ``index``) when its energy counter reads, else None (no
    package, no driver, a GPU older than Volta). ``module`` stands in for ``pynvml`` in tests."""
    try:
        nv = module if module is not None else importlib.import_module("pynvml")  # optional: GPU machines only
        nv.nvmlInit()
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        nv.nvmlDeviceGetTotalEnergyConsumption(handle)
        return nv, handle
    except Exception:  # any failure means: no counter here, estimate instead
        return None


def _gpu_index(device: Any) -> int | None:
    text = str(device)
    if not text.startswith("cuda"):
        return None
    return int(text.split(":")[1]) if ":" in text else 0


@dataclass(frozen=True)
class Meter:
    """What a job's energy is read from; ``read()`` at the start and end, ``energy(a, b)`` between."""

    model: PowerModel
    slots_on_device: int
    gpu: bool
    rapl: tuple[Path, ...]
    nvml: Any  # (module, handle) or None
    proc_stat: str = PROC_STAT

    def read(self) -> Reading:
        """The counters now."""
        nvml_mj = None
        if self.nvml is not None:
            nv, handle = self.nvml
            try:
                nvml_mj = float(nv.nvmlDeviceGetTotalEnergyConsumption(handle))
            except Exception:  # a counter that stops reading: estimate for this job
                nvml_mj = None
        return Reading(
            wall=time.perf_counter(),
            cpu=time.process_time(),
            machine_cpu=machine_cpu_seconds(self.proc_stat),
            rapl_uj=read_rapl(list(self.rapl)) if self.rapl else None,
            nvml_mj=nvml_mj,
        )

    def energy(self, a: Reading, b: Reading, rss_gib: float | None = None) -> dict:
        """The record's ``energy`` entry for the interval a -> b: joules, kWh, gCO2e, source and the
        parts it was made of."""
        m = self.model
        wall, cpu = b.wall - a.wall, max(0.0, b.cpu - a.cpu)
        gib = peak_rss_gib() if rss_gib is None else rss_gib
        memory_j = gib * m.watts_per_gib * wall
        parts: dict[str, float] = {"memory_j": memory_j}
        cpu_source = "estimate"
        cpu_j = cpu * m.watts_per_core
        if a.rapl_uj is not None and b.rapl_uj is not None:
            package = sum(_rise(x, y, d) for x, y, d in zip(a.rapl_uj, b.rapl_uj, self.rapl)) / 1e6
            busy = b.machine_cpu - a.machine_cpu
            if busy > 0 and package >= 0:
                share = min(1.0, cpu / busy)
                cpu_j, cpu_source = package * share, "rapl"
                parts["package_share"] = share
        parts["cpu_j"] = cpu_j
        source = cpu_source
        if self.gpu:
            if a.nvml_mj is not None and b.nvml_mj is not None and b.nvml_mj >= a.nvml_mj:
                parts["gpu_j"] = (b.nvml_mj - a.nvml_mj) / 1e3 / self.slots_on_device
                source = "nvml"
            else:
                parts["gpu_j"] = m.gpu_watts * wall / self.slots_on_device
                source = "estimate"
        joules = sum(v for k, v in parts.items() if k.endswith("_j")) * m.pue
        kwh = joules / JOULES_PER_KWH
        return {
            "joules": joules,
            "kwh": kwh,
            "co2e_g": kwh * m.carbon_intensity,
            "source": source,
            "seconds": wall,
            "cpu_seconds": cpu,
            "parts": parts,
            "model": {"pue": m.pue, "carbon_intensity": m.carbon_intensity}
            | ({"watts_per_core": m.watts_per_core} if cpu_source == "estimate" else {})
            | ({"gpu_watts": m.gpu_watts} if self.gpu and source == "estimate" else {})
            | {"watts_per_gib": m.watts_per_gib},
        }


def _rise(a: int, b: int, domain: Path) -> int:
    """A RAPL counter's rise from a to b, across one wrap-around (``max_energy_range_uj``)."""
    if b >= a:
        return b - a
    top = _read_int(domain / "max_energy_range_uj")
    return b - a + (top or 0) + 1 if top else 0


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def meter(
    device: Any,
    model: PowerModel = PowerModel(),
    slots_on_device: int = 1,
    powercap: str = POWERCAP,
    proc_stat: str = PROC_STAT,
    nvml_module: Any = None,
) -> Meter:
    """A ``Meter`` for a job on ``device`` (a torch device or its name), with the counters this
    machine lets the process read."""
    index = _gpu_index(device)
    return Meter(
        model=model,
        slots_on_device=max(1, slots_on_device),
        gpu=index is not None,
        rapl=tuple(rapl_domains(powercap)),
        nvml=nvml_handle(index, nvml_module) if index is not None else None,
        proc_stat=proc_stat,
    )


@dataclass(frozen=True)
class Span:
    """A job's energy from ``begin`` to ``end()``."""

    meter: Meter
    start: Reading

    def end(self) -> dict:
        """The record's ``energy`` entry from the start to now."""
        return self.meter.energy(self.start, self.meter.read())


def settings(model: PowerModel, slots_on_device: int) -> dict:
    """What a job payload carries for ``begin``: the power model and the slots sharing a device."""
    return {**dataclasses.asdict(model), "slots_on_device": slots_on_device}


def begin(job_settings: dict | None, device: Any) -> Span:
    """Start measuring a job on ``device`` with the payload's ``energy`` settings (the defaults
    and one slot when a payload has none, e.g. from ``bench rerun`` of an old record)."""
    given = dict(job_settings or {})
    slots = int(given.pop("slots_on_device", 1))
    m = meter(device, PowerModel(**given), slots)
    return Span(m, m.read())


def combine(entries: list[tuple[dict, float]]) -> dict:
    """The weighted sum of energy entries: a stacked job's own setup and evaluation (weight 1) and
    its share of the stack's training (weight 1 / stack size). The source is "estimate" when any
    part was estimated; the model is the first entry's."""
    first = entries[0][0]
    keys = {k for e, _ in entries for k in e["parts"] if k.endswith("_j")}
    sources = {e["source"] for e, _ in entries}
    return {
        **{k: sum(e[k] * w for e, w in entries) for k in ("joules", "kwh", "co2e_g", "seconds", "cpu_seconds")},
        "source": "estimate" if "estimate" in sources else first["source"],
        "parts": {k: sum(e["parts"].get(k, 0.0) * w for e, w in entries) for k in sorted(keys)},
        "model": first["model"],
    }
