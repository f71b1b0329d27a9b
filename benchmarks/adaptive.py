"""Replay of completed sweeps as adaptive designs ([design] kind = "adaptive"): the share of the
student jobs the adaptive design needed, whether its verdict agreed with the full sweep's, and
its false-positive rate under the null with optional stopping (docs/statistics.md section 9).

Each sweep's runs table is cut into the batches ``bench run`` would run (``bench.plan.design``,
one order per design seed) and passed look by look through ``bench.analysis.sequential.replay``,
the functions ``bench run`` uses. The full sweep's verdict is ``stats.call`` on
``stats.robust_tables`` of every run at 95% (the report's). Sources:

- real sweeps: the records under results/<name>/ of each --sweep spec (default the quickstart;
  the N=6 CIFAR-10 CPU sweep when its records exist), replayed in --orders design seeds;
- synthetic sweeps from benchmarks/calibration.py's simulator (null and effect scenarios), one
  order each (the sweep and the order both vary).

    python benchmarks/adaptive.py                       # docs/statistics.md: the table
    python benchmarks/adaptive.py --reps 100 --orders 20 --quick

Targets: under the null the adaptive verdict claims an effect in at most error + 2 MCSE of the
sweeps; where the full sweep finds an effect, the adaptive design gives its verdict from at most
40% of the student jobs (the median share is reported; so is the share of sweeps meeting it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration import Scenario, simulate  # noqa: E402  (the simulator of benchmarks/calibration.py)

from bench.analysis.aggregate import jobs_frame  # noqa: E402
from bench.analysis.sequential import cell_key, look_intervals, reading, replay  # noqa: E402
from bench.analysis.stats import call, robust_tables  # noqa: E402
from bench.core.records import load_records  # noqa: E402
from bench.plan.design import Cell, cell_batches  # noqa: E402
from bench.plan.jobs import make_plan  # noqa: E402
from bench.spec.load import load_sweep  # noqa: E402

ERROR = 0.05


def batches_of(runs: pd.DataFrame, looks: int, seed: int) -> list[list[tuple[str, int]]]:
    """The design's batches of the cells in ``runs`` for one order seed."""
    primary = pd.array(runs["primary"], dtype="Int64").fillna(-1).astype(int)
    by_k: dict[int, set[Cell]] = {}
    for k, c, p in zip(runs["k"], runs["combination"], primary):
        by_k.setdefault(int(k), set()).add((tuple(int(t) for t in c.split("-")), int(p)))
    return [[cell_key(*c) for c in b] for b in cell_batches({k: sorted(v) for k, v in by_k.items()}, looks, seed)]


def full_verdict(runs: pd.DataFrame) -> str:
    """The full sweep's verdict at its largest k: the report's (``stats.call`` on
    ``stats.robust_tables`` at 95%)."""
    _, comparison = robust_tables(runs)
    return call(comparison.sort_values("k").iloc[-1])


def full_verdict_fast(runs: pd.DataFrame) -> str:
    """``full_verdict`` by the same fit and contrast without the report's other tables (the
    simulated sweeps: ``look_intervals`` at error 0.05 on every cell)."""
    return reading(look_intervals(runs, int(runs["k"].max()), "worst_m", 0.05)[0])


def one(runs: pd.DataFrame, looks: int, seed: int, tolerance: float) -> dict:
    """One adaptive replay: its stop, share of jobs and verdict."""
    k = int(runs["k"].max())
    done, why = replay(runs, batches_of(runs, looks, seed), k, "worst_m", ERROR, tolerance)
    verdict = reading(done[-1].points[0]) if done else "untestable"
    return {"share": done[-1].jobs / len(runs) if done else 0.0, "why": why, "verdict": verdict}


def _synthetic(args: tuple) -> dict:
    sc, i, looks, tolerance = args
    runs = simulate(sc, np.random.default_rng(5000 + i))
    return {**one(runs, looks, i, tolerance), "full": full_verdict_fast(runs)}


def _rate(x) -> tuple[float, float]:
    x = np.asarray(x, float)
    p = float(x.mean()) if len(x) else float("nan")
    return p, float(np.sqrt(p * (1 - p) / len(x))) if len(x) else float("nan")


def summarise(name: str, rows: list[dict], n_orders: str) -> dict:
    df = pd.DataFrame(rows)
    claims = df["verdict"].isin(["better", "worse"])
    effect = df[df["full"].isin(["better", "worse"])]
    return {
        "sweep": name,
        "replays": n_orders,
        "full finds an effect": f"{(df['full'].isin(['better', 'worse'])).mean():.2f}",
        "median share of jobs": f"{df['share'].median():.2f}",
        "median share (full finds an effect)": f"{effect['share'].median():.2f}" if len(effect) else "-",
        "share <= 40% (full finds an effect)": f"{(effect['share'] <= 0.4 + 1e-9).mean():.2f}" if len(effect) else "-",
        "agrees with full": "{:.3f} ± {:.3f}".format(*_rate(df["verdict"] == df["full"])),
        "adaptive claims an effect": "{:.3f} ± {:.3f}".format(*_rate(claims)),
        "stops (effect/precise/budget/complete)": "/".join(
            str(int((df["why"] == w).sum())) for w in ("effect", "precise", "budget", "complete")
        ),
        "_claims": _rate(claims),
    }


def real_sweep(spec: str, orders: int, looks: int, tolerance: float) -> dict | None:
    """Replays of a completed sweep's records in ``orders`` design seeds; None without records."""
    sweep = load_sweep(spec)
    plan = make_plan(sweep)
    records = [r for r in load_records(sweep.results_dir(), jobs=plan.jobs).values() if r["status"] == "ok"]
    if len(records) < len(plan.jobs):
        print(f"{spec}: {len(records)} of {len(plan.jobs)} runs recorded under {sweep.results_dir()}: skipped")
        return None
    runs = jobs_frame(records, sorted(sweep.grid))
    full = full_verdict(runs)
    rows = [{**one(runs, looks, seed, tolerance), "full": full} for seed in range(orders)]
    tol = f", tolerance {tolerance:g}" if tolerance else ""
    return summarise(f"{sweep.name} (records{tol})", rows, f"{orders} orders")


def scenarios(quick: bool) -> list[tuple[Scenario, float, float]]:
    """(scenario, tolerance, share of --reps): nulls at full --reps, the rest at half."""
    out = [
        (Scenario("null N=6 r=3"), 0.0, 1.0),
        (Scenario("null N=4 r=3", n=4), 0.0, 1.0),
        (Scenario("null N=6 r=3 primary", primary=True, sd_primary=0.004), 0.0, 0.5),
        (Scenario("null N=6 r=3, tolerance 0.01"), 0.01, 0.5),
        (Scenario("shift +0.008 N=6 r=3", shift=0.008), 0.0, 0.5),
        (Scenario("shift +0.016 N=6 r=3", shift=0.016), 0.0, 0.5),
        (Scenario("shift +0.032 N=6 r=3", shift=0.032), 0.0, 0.5),
    ]
    return [out[0], out[5]] if quick else out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", action="append", help="a completed sweep's spec (default: the quickstart, CIFAR N=6)")
    p.add_argument("--orders", type=int, default=200, help="design seeds per real sweep (default 200)")
    p.add_argument("--reps", type=int, default=400, help="simulated sweeps per null scenario, half that for others")
    p.add_argument("--looks", type=int, default=6, help="[design] looks (default 6, the spec's default)")
    p.add_argument("--jobs", type=int, default=-1, help="processes (default: every core)")
    p.add_argument("--quick", action="store_true", help="two scenarios (a smoke run)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    rows, failures = [], []
    for spec in args.sweep or ["sweeps/quickstart.toml", "sweeps/cpu/cifar10-resnet-n6.toml"]:
        for tol in (0.0, 0.01):
            row = real_sweep(spec, args.orders, args.looks, tol)
            if row is None:
                break
            rows.append(row)
    with ProcessPoolExecutor(max_workers=args.jobs if args.jobs > 0 else os.cpu_count()) as pool:
        for sc, tol, share in scenarios(args.quick):
            reps = max(1, int(args.reps * share))
            work = list(zip(itertools.repeat(sc), range(reps), itertools.repeat(args.looks), itertools.repeat(tol)))
            row = summarise(f"simulated {sc.name}", list(pool.map(_synthetic, work, chunksize=8)), f"{reps} sweeps")
            rows.append(row)
            rate, se = row["_claims"]
            if sc.null and rate > ERROR + 2 * se + 1e-12:
                failures.append(f"{sc.name}: adaptive false-positive rate {rate:.3f} ± {se:.3f} above {ERROR} + 2 MCSE")
            print(f"{row['sweep']}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows).drop(columns=["_claims"])
    print(f"adaptive replay: looks = {args.looks}, error = {ERROR}, statistic worst_m, k = N vs 1")
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for r in table.itertuples(index=False):
        print("| " + " | ".join(map(str, r)) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    for f in failures:
        print("FAIL", f)
    print("null targets met" if not failures else f"{len(failures)} target(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
