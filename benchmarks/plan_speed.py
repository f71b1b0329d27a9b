"""`bench plan` speed of every shipped spec (issue 20, item 3): each spec planned in a fresh
interpreter, the specs interleaved round by round so that the machine's load hits them alike; per
spec the median wall seconds, and the ratio of the slowest text (or LM) spec to the digits
quickstart (target <= 2; validation reads model configs as data and never imports torch or
transformers: tests/test_accounting.py checks the imports).

    .venv/bin/python benchmarks/plan_speed.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIGITS = "sweeps/quickstart.toml"


def plan_seconds(spec: str) -> float:
    """Wall seconds of `python -m bench.cli plan <spec>` in a fresh interpreter (exit code 0 checked)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "plan", spec],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench plan {spec} failed: {proc.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    specs = sorted(str(p.relative_to(REPO)) for p in (REPO / "sweeps").rglob("*.toml"))
    times: dict[str, list[float]] = {s: [] for s in specs}
    for _ in range(args.rounds):
        for spec in specs:  # interleaved: every round plans every spec once
            times[spec].append(plan_seconds(spec))
    median = {s: statistics.median(t) for s, t in times.items()}
    for spec in specs:
        print(f"{spec:42s} {median[spec]:6.2f} s")
    slowest = max((s for s in specs if s != DIGITS), key=median.__getitem__)
    print(
        f"slowest other spec {slowest}: {median[slowest]:.2f} s; ratio to {DIGITS} "
        f"({median[DIGITS]:.2f} s): {median[slowest] / median[DIGITS]:.2f}; "
        f"glue-toy / quickstart: {median['sweeps/glue-toy.toml'] / median[DIGITS]:.2f}"
    )
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) after {args.rounds} rounds")


if __name__ == "__main__":
    main()
