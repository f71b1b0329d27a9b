"""How long `bench report` takes on 189 / 756 / 3,024 records, and (with --before) against another
commit, interleaved, with the outputs compared byte for byte (issue 20, item 6).

The records are real: the quickstart (digits, 6 CNN teachers) with r = 3, 12, 48 repeats and
1-epoch students (r = 3 keeps the quickstart's 20 epochs), run once into the work folder and
reused. Each `bench report` runs as its own process (imports included, as a user runs it);
wall seconds and the CPU seconds of the process (user + system) are printed per run; compare
ratios within one run (the machine is shared). With ``--before REF`` the code of REF (``git
archive`` into the work folder) reports the same records, interleaved with the current code, and
every CSV and report.md of the two report folders must be equal.

    .venv/bin/python benchmarks/report_speed.py [--before REF] [--trials 3] [--workdir /tmp/bench-report-speed]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = (3, 12, 48)  # repeats: 63 combinations x r records


def make_records(folder: Path) -> list[Path]:
    """The three sweeps' specs, their records made once (teachers shared)."""
    text = (REPO / "sweeps" / "quickstart.toml").read_text()
    specs = []
    for r in SIZES:
        spec = re.sub(r'(?m)^name = "quickstart"', f'name = "qs-r{r}"', text)
        spec = re.sub(r"(?m)^repeats = 3\b", f"repeats = {r}", spec)
        if r != 3:
            spec = re.sub(r"(?ms)(\[student\].*?^epochs = )\d+", r"\g<1>1", spec)
        path = folder / f"qs-r{r}.toml"
        path.write_text(spec)
        cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--quiet", "--no-report"]
        subprocess.run(cmd, cwd=folder, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        specs.append(path)
    return specs


def timed_report(code: Path, spec: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one `bench report` process run with ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.cli", "report", str(spec)]
    subprocess.run(cmd, cwd=spec.parent, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(code)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def same_outputs(a: Path, b: Path) -> list[str]:
    """The CSVs and report.md that differ between two report folders (or are missing from one)."""
    names = sorted({p.name for p in [*a.iterdir(), *b.iterdir()] if p.suffix == ".csv" or p.name == "report.md"})
    return [n for n in names if not ((a / n).exists() and (b / n).exists() and filecmp.cmp(a / n, b / n, False))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="a git ref whose code reports the same records, interleaved")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/bench-report-speed", help="kept: the records are made once")
    args = ap.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    specs = make_records(folder)
    codes = {"now": REPO}
    if args.before:
        old = folder / "code-before"
        shutil.rmtree(old, ignore_errors=True)
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "bench"], cwd=REPO, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        codes = {"before": old, "now": REPO}
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    differ: list[str] = []
    for _ in range(args.trials):
        for spec, r in zip(specs, SIZES):
            for name, code in codes.items():
                times.setdefault((name, r), []).append(timed_report(code, spec))
                report = spec.parent / "reports" / spec.stem
                kept = spec.parent / f"reports-{name}" / spec.stem
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(report, kept)
            if args.before:
                bad = same_outputs(folder / "reports-before" / spec.stem, folder / "reports-now" / spec.stem)
                differ += [f"{spec.stem}/{n}" for n in bad]
    print(
        f"bench report, median of {args.trials} (wall s / CPU s); "
        f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for r in SIZES:
        cells = []
        for name in codes:
            t = times[(name, r)]
            cells.append(f"{name} {statistics.median(w for w, _ in t):.1f} / {statistics.median(c for _, c in t):.1f}")
        if args.before:
            ratio = statistics.median(n[1] / b[1] for b, n in zip(times[("before", r)], times[("now", r)]))
            cells.append(f"CPU now/before {ratio:.2f}")
        print(f"{63 * r:5d} records: " + "; ".join(cells))
    if args.before:
        print("outputs identical (CSVs, report.md)" if not differ else f"outputs DIFFER: {sorted(set(differ))}")


if __name__ == "__main__":
    main()
