"""Memory of a sweep (issue: performance, item 5): peak resident memory of the driver and of a
job's worker process, and how the driver's grows with the number of jobs and of teachers.

Runs `bench run` on copies of the quickstart (teachers trained first, not sampled) and samples
the resident set of the driver and its worker processes from /proc every 50 ms. For each
configuration it prints the driver's resident memory when 10%, 50% and 100% of the jobs are
recorded (flat means it does not grow with finished jobs), the driver's peak and the largest
worker's peak.

    .venv/bin/python benchmarks/memory.py [--configs 6x3 6x9 3x9]   (N teachers x r repeats)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def measure(n: int, r: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        folder = Path(tmp)
        text = (REPO / "sweeps" / "quickstart.toml").read_text()
        text = re.sub(r"(?m)^teachers = \d+", f"teachers = {n}", text)
        text = re.sub(r"(?m)^repeats = \d+", f"repeats = {r}", text)
        spec = folder / "s.toml"
        spec.write_text(text)
        cmd = [sys.executable, "-m", "bench.cli", "run", str(spec), "--quiet", "--no-report"]
        subprocess.run([*cmd, "--teachers-only"], cwd=folder, check=True, capture_output=True)
        from bench.plan.jobs import make_plan
        from bench.spec.load import load_sweep

        total = len(make_plan(load_sweep(spec)).jobs)
        proc = subprocess.Popen(cmd, cwd=folder, stderr=subprocess.DEVNULL)
        records = folder / "results" / "quickstart" / "records"
        samples = []  # (jobs recorded, driver MB, max worker MB)
        while proc.poll() is None:
            done = len(list(records.glob("*.json"))) if records.is_dir() else 0
            samples.append((done, rss_mb(proc.pid), max([rss_mb(c) for c in children(proc.pid)] or [0.0])))
            time.sleep(0.05)

    def driver_at(frac: float) -> float:
        return next((d for done, d, _ in samples if done >= frac * total), samples[-1][1])

    return {
        "n": n,
        "r": r,
        "jobs": total,
        "driver_10": driver_at(0.1),
        "driver_50": driver_at(0.5),
        "driver_100": driver_at(1.0),
        "driver_peak": max(d for _, d, _ in samples),
        "worker_peak": max(w for _, _, w in samples),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["6x3", "6x9", "3x9"], help="N x r")
    args = ap.parse_args()
    rows = [measure(*map(int, c.split("x"))) for c in args.configs]
    print("N  r  jobs | driver MB at 10% / 50% / 100% of jobs, peak | largest worker peak MB")
    for m in rows:
        print(
            f"{m['n']}  {m['r']}  {m['jobs']:4d} | {m['driver_10']:.0f} / {m['driver_50']:.0f} / "
            f"{m['driver_100']:.0f}, {m['driver_peak']:.0f} | {m['worker_peak']:.0f}"
        )
    a = rows[0]
    for m in rows[1:]:
        print(
            f"driver peak {m['n']}x{m['r']} / {a['n']}x{a['r']}: {m['driver_peak'] / a['driver_peak']:.3f} "
            f"for {m['jobs'] / a['jobs']:.1f}x the jobs; worker peak ratio {m['worker_peak'] / a['worker_peak']:.3f}"
        )


if __name__ == "__main__":
    main()
