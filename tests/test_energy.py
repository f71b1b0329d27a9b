"""Energy per job (bench.core.energy): hand-checkable figures from fake RAPL counter files, a fake
/proc/stat and a fake NVML module, and the estimate's power model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.core.energy import JOULES_PER_KWH, PowerModel, Reading, machine_cpu_seconds, meter, rapl_domains


def _powercap(root: Path, uj: list[int], top: int = 2**32) -> Path:
    for i, v in enumerate(uj):
        d = root / f"intel-rapl:{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "energy_uj").write_text(f"{v}\n")
        (d / "max_energy_range_uj").write_text(f"{top}\n")
        sub = root / f"intel-rapl:{i}:0"  # a sub-zone (core): not counted again
        sub.mkdir(exist_ok=True)
        (sub / "energy_uj").write_text("5\n")
    return root


def _reading(wall: float, cpu: float, machine: float, rapl=None, nvml=None) -> Reading:
    return Reading(wall=wall, cpu=cpu, machine_cpu=machine, rapl_uj=rapl, nvml_mj=nvml)


def test_estimate_is_cpu_seconds_times_watts_plus_memory():
    m = meter(
        "cpu",
        PowerModel(watts_per_core=10.0, watts_per_gib=0.5, pue=1.5, carbon_intensity=400.0),
        powercap="/nonexistent",
    )
    e = m.energy(_reading(0.0, 1.0, 0.0), _reading(10.0, 5.0, 0.0), rss_gib=2.0)
    # (4 cpu s x 10 W + 2 GiB x 0.5 W x 10 s) x PUE 1.5 = (40 + 10) x 1.5 = 75 J
    assert e["source"] == "estimate"
    assert e["joules"] == pytest.approx(75.0)
    assert e["kwh"] == pytest.approx(75.0 / JOULES_PER_KWH)
    assert e["co2e_g"] == pytest.approx(75.0 / JOULES_PER_KWH * 400.0)
    assert e["model"]["watts_per_core"] == 10.0


def test_rapl_charges_the_process_its_share_of_the_package(tmp_path):
    root = _powercap(tmp_path / "powercap", [1_000_000, 3_000_000])
    assert [d.name for d in rapl_domains(str(root))] == ["intel-rapl:0", "intel-rapl:1"]
    m = meter("cpu", PowerModel(watts_per_gib=0.0), powercap=str(root))
    # packages rise by 30 J + 50 J = 80 J; the process used 2 of the machine's 8 busy CPU seconds
    e = m.energy(
        _reading(0.0, 0.0, 100.0, rapl=(1_000_000, 3_000_000)),
        _reading(4.0, 2.0, 108.0, rapl=(31_000_000, 53_000_000)),
        rss_gib=1.0,
    )
    assert e["source"] == "rapl"
    assert e["parts"]["package_share"] == pytest.approx(0.25)
    assert e["joules"] == pytest.approx(20.0)


def test_rapl_counter_wraps_around(tmp_path):
    root = _powercap(tmp_path / "powercap", [0], top=1_000_000_000)
    m = meter("cpu", PowerModel(watts_per_gib=0.0), powercap=str(root))
    e = m.energy(_reading(0, 0, 0, rapl=(999_000_000,)), _reading(1, 1, 1, rapl=(1_000_000,)), rss_gib=0)
    assert e["joules"] == pytest.approx(2.000001)  # 1 J to the top, 1 J after, +1 uj for the wrap


def test_rapl_and_proc_stat_read_from_files(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 1000 30 0 0 0 0 0\ncpu0 1 2 3 4\n")
    import os

    assert machine_cpu_seconds(str(stat)) == pytest.approx(150 / os.sysconf("SC_CLK_TCK"))
    assert machine_cpu_seconds(str(tmp_path / "missing")) != machine_cpu_seconds(str(tmp_path / "missing"))  # NaN
    root = _powercap(tmp_path / "powercap", [7])
    m = meter("cpu", powercap=str(root), proc_stat=str(stat))
    assert m.read().rapl_uj == (7,)


class FakeNvml:
    """pynvml's four calls used, over a counter the test moves."""

    def __init__(self, mj: float = 0.0, works: bool = True):
        self.mj, self.works = mj, works

    def nvmlInit(self):
        if not self.works:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.mj


def test_nvml_counter_split_between_the_slots_of_a_gpu():
    nv = FakeNvml(mj=5_000.0)
    m = meter(
        "cuda:1",
        PowerModel(watts_per_core=0.0, watts_per_gib=0.0),
        slots_on_device=2,
        powercap="/nonexistent",
        nvml_module=nv,
    )
    a = m.read()
    nv.mj += 600_000.0  # 600 J on the board
    b = m.read()
    e = m.energy(a, b, rss_gib=0.0)
    assert e["source"] == "nvml"
    assert e["parts"]["gpu_j"] == pytest.approx(300.0)
    assert e["joules"] == pytest.approx(300.0)


def test_gpu_without_counter_is_estimated_from_board_power():
    m = meter(
        "cuda:0",
        PowerModel(watts_per_core=0.0, watts_per_gib=0.0, gpu_watts=200.0),
        slots_on_device=4,
        powercap="/nonexistent",
        nvml_module=FakeNvml(works=False),
    )
    assert m.nvml is None
    e = m.energy(_reading(0.0, 0.0, 0.0), _reading(2.0, 0.0, 0.0), rss_gib=0.0)
    assert e["source"] == "estimate"
    assert e["joules"] == pytest.approx(100.0)  # 200 W x 2 s / 4 slots
    assert e["model"]["gpu_watts"] == 200.0


def test_a_real_interval_on_this_machine_has_positive_energy():
    m = meter("cpu")
    a = m.read()
    t = time.process_time()
    while time.process_time() - t < 0.05:
        pass
    e = m.energy(a, m.read())
    assert e["source"] in ("rapl", "estimate")
    assert e["cpu_seconds"] >= 0.04 and e["joules"] > 0
