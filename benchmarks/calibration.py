"""Calibration of the report's statistics by simulation: false-positive rate of the verdict,
coverage of every interval the report prints, and power, each with its Monte-Carlo standard
error, over designs N in {4, 6}, r in {1, 3, 5}, with and without a primary teacher.

Runs tables are drawn from a variance-components model of a sweep (one row per run, the shape
``bench.analysis.aggregate.jobs_frame`` makes) and passed through the very functions the report calls:
``bench.analysis.stats.robust_tables`` and ``bench.analysis.stats.call`` (the verdict's reading). The model, per
run of combination c (members T_c, k = |T_c|), primary p (if the method has one), repeat j:

    score = mu + delta(k) + mean_{i in T_c} t_i + pi_p + g_c + h_{c,p} + s_j + noise(k) * e

t_i: teacher effect (teachers differ in quality); pi_p: the primary's own effect (primaries of
unequal quality); g_c: the combination's own effect; h_{c,p}: the cell's; s_j: the student seed
j, shared by every combination (repeat j uses the same seed everywhere); e: run noise. Null
scenarios have delta = 0 and noise(k) = 1. Effect scenarios shift the mean (delta) or shrink the
run noise with k (noise(k) = 1/sqrt(k)); their truth (the population contrasts of the worst,
best and mean of m runs) is computed by a large Monte-Carlo draw of the same model.

    python benchmarks/calibration.py            # every scenario, 500 sweeps each (docs/statistics.md: time)
    python benchmarks/calibration.py --reps 200 --quick

Targets (issue 14): in every null scenario the two-sided false-positive rate of the verdict is
at most 5% + 2 MCSE, and every 95% interval covers its truth at least 93% of the time: pooled
over k, at k = N, and at the least-covered k. Power is the share of sweeps whose verdict says
"better" (a "worse" call under a real gain is an error, not power).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.stats import STATISTICS, call, robust_tables

LEVEL = 0.95


@dataclass(frozen=True)
class Scenario:
    """One design and one truth. Standard deviations are in score units (accuracy)."""

    name: str
    n: int = 6
    r: int = 3
    primary: bool = False
    mu: float = 0.92
    sd_teacher: float = 0.004
    sd_primary: float = 0.0
    sd_combination: float = 0.002
    sd_cell: float = 0.001
    sd_seed: float = 0.002
    sd_noise: float = 0.004
    shift: float = 0.0  # delta(k) = shift * (k - 1) / (N - 1): a mean gain reaching `shift` at k = N
    shrink: bool = False  # noise(k) = 1 / sqrt(k)

    @property
    def null(self) -> bool:
        return self.shift == 0 and not self.shrink


def simulate(sc: Scenario, rng: np.random.Generator) -> pd.DataFrame:
    """One sweep's runs table (every k, every combination, every primary when the method has one)."""
    t = rng.normal(0, sc.sd_teacher, sc.n)
    pi = rng.normal(0, sc.sd_primary, sc.n)
    s = rng.normal(0, sc.sd_seed, sc.r)
    rows = []
    for k in range(1, sc.n + 1):
        delta = sc.shift * (k - 1) / (sc.n - 1)
        noise = sc.sd_noise / np.sqrt(k) if sc.shrink else sc.sd_noise
        for members in itertools.combinations(range(sc.n), k):
            base = sc.mu + delta + t[list(members)].mean() + rng.normal(0, sc.sd_combination)
            comb = "-".join(map(str, members))
            for p in members if sc.primary else (None,):
                cell = base + (pi[p] if p is not None else 0.0) + rng.normal(0, sc.sd_cell)
                y = cell + s + rng.normal(0, noise, sc.r)
                rows += [(k, comb, p, j, float(y[j])) for j in range(sc.r)]
    df = pd.DataFrame(rows, columns=["k", "combination", "primary", "repeat", "score"])
    df["primary"] = df["primary"].astype("Int64")
    return df.assign(status="ok")


def truth(sc: Scenario, m: int, draws: int = 400_000) -> pd.DataFrame:
    """Per k: the population contrast against k=1 of the expected worst and best of m runs of a
    cell and of the mean (effects constant within a cell cancel; seeds and noise do not)."""
    rng = np.random.default_rng(7)
    s = rng.normal(0, sc.sd_seed, (draws, m))
    e = rng.normal(0, 1, (draws, m))
    rows = []
    for k in range(1, sc.n + 1):
        delta = sc.shift * (k - 1) / (sc.n - 1)
        noise = sc.sd_noise / np.sqrt(k) if sc.shrink else sc.sd_noise
        y = s + noise * e
        rows.append({"k": k, "worst_m": delta + y.min(1).mean(), "best_m": delta + y.max(1).mean(), "mean": delta})
    out = pd.DataFrame(rows).set_index("k")
    return out - out.loc[1]


def one_sweep(sc: Scenario, seed: int, true: pd.DataFrame) -> dict:
    """Verdict and interval coverage of one simulated sweep."""
    jobs = simulate(sc, np.random.default_rng(seed))
    summary, comparison = robust_tables(jobs, level=LEVEL)
    last = comparison.sort_values("k").iloc[-1]
    out = {"call": call(last), "mde": last["mde_worst_m"], "df": last["df"]}
    for s in STATISTICS:
        rows = summary[summary["k"] != 1]
        covered = (rows[f"d_{s}_lo"] <= rows["k"].map(true[s])) & (rows["k"].map(true[s]) <= rows[f"d_{s}_hi"])
        out[f"cover_{s}"] = covered.to_numpy()
        out[f"cover_{s}_kN"] = bool(covered.to_numpy()[-1])
    return out


def run_scenario(sc: Scenario, reps: int, jobs: int) -> dict:
    """Rates over ``reps`` sweeps with Monte-Carlo standard errors."""
    true = truth(sc, sc.r)
    with ProcessPoolExecutor(max_workers=jobs if jobs > 0 else os.cpu_count()) as pool:
        results = list(pool.map(one_sweep, [sc] * reps, [1000 + i for i in range(reps)], [true] * reps))
    calls = pd.Series([r["call"] for r in results])

    def rate(x) -> tuple[float, float]:
        p = float(np.mean(x))
        return p, float(np.sqrt(p * (1 - p) / len(x)))

    row = {
        "scenario": sc.name,
        "N": sc.n,
        "r": sc.r,
        "primary": sc.primary,
        "null": sc.null,
        "claims": rate(calls.isin(["better", "worse"])),
        "better": rate(calls == "better"),
        "untestable": float((calls == "untestable").mean()),
        "mde": float(np.nanmedian([r["mde"] for r in results])),
    }
    for s in STATISTICS:
        row[f"cover_{s}"] = rate(np.concatenate([r[f"cover_{s}"] for r in results]))
        row[f"cover_{s}_kN"] = rate([r[f"cover_{s}_kN"] for r in results])
        per_k = np.array([r[f"cover_{s}"] for r in results])  # sweeps x (k = 2..N)
        low = int(per_k.mean(0).argmin())
        row[f"cover_{s}_lowest"] = (*rate(per_k[:, low]), low + 2)  # the least-covered k, as (rate, MCSE, k)
    return row


def scenarios(quick: bool) -> list[Scenario]:
    """Null scenarios over the designs, then effect scenarios for power and coverage."""
    out = []
    for n, r, primary in itertools.product((4, 6), (1, 3, 5), (False, True)):
        if quick and (r == 5 or (primary and n == 6)):
            continue
        base = Scenario(
            f"null N={n} r={r}{' primary' if primary else ''}",
            n=n,
            r=r,
            primary=primary,
            sd_primary=0.004 if primary else 0.0,
        )
        out.append(base)
    effects = [
        Scenario("shift +0.004 N=6 r=3", shift=0.004),
        Scenario("shift +0.008 N=6 r=3", shift=0.008),
        Scenario("shift +0.004 N=4 r=3", n=4, shift=0.004),
        Scenario("noise 1/sqrt(k) N=6 r=3", shrink=True),
        Scenario("noise 1/sqrt(k) N=6 r=5", r=5, shrink=True),
        Scenario("shift +0.004 N=6 r=3 primary", primary=True, sd_primary=0.004, shift=0.004),
    ]
    if quick:
        effects = effects[:1] + effects[3:4]
    return out + effects


def fmt(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=500, help="simulated sweeps per scenario (default 500)")
    p.add_argument("--jobs", type=int, default=-1, help="processes (default: every core)")
    p.add_argument("--quick", action="store_true", help="fewer scenarios (a smoke run)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    rows, failures = [], []
    print(f"calibration: {args.reps} sweeps per scenario, {LEVEL:.0%} intervals, verdict at k = N vs k = 1")
    print(
        "| scenario | claims an effect | says 'better' (power) | median MDE | cover worst | cover best | cover mean "
        "| cover worst at k=N | lowest per-k cover (worst / best / mean) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for sc in scenarios(args.quick):
        row = run_scenario(sc, args.reps, args.jobs)
        rows.append(row)
        print(
            f"| {row['scenario']} | {fmt(row['claims'])} | {fmt(row['better'])} | {row['mde']:.4f} "
            f"| {fmt(row['cover_worst_m'])} | {fmt(row['cover_best_m'])} | {fmt(row['cover_mean'])} "
            f"| {fmt(row['cover_worst_m_kN'])} | "
            + " / ".join(f"{row[f'cover_{s}_lowest'][0]:.3f} (k={row[f'cover_{s}_lowest'][2]})" for s in STATISTICS)
            + " |",
            flush=True,
        )
        if row["null"] and row["claims"][0] > 0.05 + 2 * row["claims"][1] + 1e-12:
            failures.append(f"{row['scenario']}: false-positive rate {fmt(row['claims'])} above 5% + 2 MCSE")
        for s in STATISTICS:
            for key in (f"cover_{s}", f"cover_{s}_kN", f"cover_{s}_lowest"):
                if row[key][0] < 0.93:
                    failures.append(f"{row['scenario']}: {key} {fmt(row[key])} below 0.93")
    print(f"\n{len(rows)} scenarios in {time.perf_counter() - start:.0f} s")
    for f in failures:
        print("FAIL", f)
    print("all targets met" if not failures else f"{len(failures)} target(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
