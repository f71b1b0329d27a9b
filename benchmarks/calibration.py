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
from math import comb

import numpy as np
import pandas as pd

from bench.analysis.robustness import DEFAULT_CONTRAST, FAIL, contrast_weights, headline_table
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
    shift: float = 0.0  # a mean gain reaching `shift` at k = N, along `shape`
    shape: str = (
        "linear"  # delta(k) / shift: (k - 1) / (N - 1) ("linear"), (1 - 1/k) / (1 - 1/N) ("trend"), k >= 2 ("step")
    )
    sd_seed_k: float = 0.0  # a seed x k interaction: seed j's effect at k has this extra sd, new at every k
    sd_primary_k: float = 0.0  # a primary x k interaction: the primary's effect at k has this extra sd
    shrink: bool = False  # noise(k) = 1 / sqrt(k)
    ks: tuple[int, ...] = ()  # the k's of the design (default 1..N; a partial design otherwise)
    spread: str = "flat"  # the combination effect's sd times sqrt(k) ("grow"), 1/sqrt(k) ("shrink") or 1
    fail: float = 0.0  # the chance that a run fails (drops by U(0.05, 0.30)) at k = 1
    fail_shape: str = "flat"  # the same chance at every k ("flat") or fail / k ("1/k")
    poor: float = 0.0  # one teacher (the first) this much worse than its fine-tuning noise gives
    old: bool = True  # a scenario of the first calibration (its per-k targets still apply)

    @property
    def null(self) -> bool:
        return self.shift == 0 and not self.shrink and (self.fail == 0 or self.fail_shape == "flat")

    def delta(self, k: int) -> float:
        """The mean gain at k."""
        shape = {
            "linear": (k - 1) / (self.n - 1),
            "trend": (1 - 1 / k) / (1 - 1 / self.n),
            "step": float(k >= 2),
        }[self.shape]
        return self.shift * shape

    def design(self) -> tuple[int, ...]:
        return self.ks or tuple(range(1, self.n + 1))

    def fail_at(self, k: int) -> float:
        return self.fail / k if self.fail_shape == "1/k" else self.fail

    def spread_at(self, k: int) -> float:
        return {"flat": 1.0, "grow": np.sqrt(k), "shrink": 1 / np.sqrt(k)}[self.spread]


def simulate(sc: Scenario, rng: np.random.Generator) -> pd.DataFrame:
    """One sweep's runs table (every k, every combination, every primary when the method has one)."""
    t = rng.normal(0, sc.sd_teacher, sc.n)
    t[0] -= sc.poor
    pi = rng.normal(0, sc.sd_primary, sc.n)
    s = rng.normal(0, sc.sd_seed, sc.r)
    rows = []
    for k in sc.design():
        delta = sc.delta(k)
        noise = sc.sd_noise / np.sqrt(k) if sc.shrink else sc.sd_noise
        s_k = s + rng.normal(0, sc.sd_seed_k, sc.r)  # the seeds' effects at this k
        pi_k = pi + rng.normal(0, sc.sd_primary_k, sc.n)  # the primaries' effects at this k
        for members in itertools.combinations(range(sc.n), k):
            base = sc.mu + delta + t[list(members)].mean() + rng.normal(0, sc.sd_combination * sc.spread_at(k))
            comb = "-".join(map(str, members))
            for p in members if sc.primary else (None,):
                cell = base + (pi_k[p] if p is not None else 0.0) + rng.normal(0, sc.sd_cell)
                y = cell + s_k + rng.normal(0, noise, sc.r)
                if sc.fail:
                    y = y - (rng.random(sc.r) < sc.fail_at(k)) * rng.uniform(0.05, 0.30, sc.r)
                rows += [(k, comb, p, j, float(y[j])) for j in range(sc.r)]
    df = pd.DataFrame(rows, columns=["k", "combination", "primary", "repeat", "score"])
    df["primary"] = df["primary"].astype("Int64")
    return df.assign(status="ok")


def truth(sc: Scenario, m: int, draws: int = 400_000) -> pd.DataFrame:
    """Per k: the population contrast against k=1 of the expected worst and best of m runs of a
    cell and of the mean (effects constant within a cell cancel; seeds and noise do not)."""
    rng = np.random.default_rng(7)
    s = rng.normal(0, np.hypot(sc.sd_seed, sc.sd_seed_k), (draws, m))  # seed x k: the same law at every k
    e = rng.normal(0, 1, (draws, m))
    rows = []
    for k in sc.design():
        delta = sc.delta(k)
        noise = sc.sd_noise / np.sqrt(k) if sc.shrink else sc.sd_noise
        y = s + noise * e  # worst, best and mean are of the runs that did not fail
        rows.append(
            {"k": k, "worst_m": delta + y.min(1).mean(), "best_m": delta + y.max(1).mean(), "mean": delta + y.mean()}
        )
    out = pd.DataFrame(rows).set_index("k")
    return out - out.loc[1]


def one_sweep(sc: Scenario, seed: int, true: pd.DataFrame) -> dict:
    """Verdict and interval coverage of one simulated sweep: the per-k intervals (against k=1) and
    the headline contrast of every statistic, as the report computes them."""
    jobs = simulate(sc, np.random.default_rng(seed))
    summary, comparison = robust_tables(jobs, level=LEVEL)
    last = comparison.sort_values("k").iloc[-1]
    head = headline_table(jobs, level=LEVEL).set_index("statistic").reindex([*STATISTICS, FAIL])
    calls = head["call"].fillna("too small to tell")
    out = {
        "call": call(last),
        "mde": last["mde_worst_m"],
        "df": last["df"],
        "claims": bool(calls.isin(["better", "worse"]).any()),
        "worst_better": bool(calls.get("worst_m") == "better" or calls.get(FAIL) == "better"),
        "any_better": bool((calls == "better").any()),
        "head_mde": float(head.loc["worst_m", "mde"]),
        "head_half": float((head.loc["worst_m", "hi"] - head.loc["worst_m", "lo"]) / 2),
        "last_half": float((last["gain_worst_m_hi"] - last["gain_worst_m_lo"]) / 2),
        "too_small": bool(calls.get("worst_m") == "too small to tell"),
        "fail_call": calls[FAIL],
        # the failure-trend test alone at 1 - LEVEL, no other statistic beside it (what the data allow)
        "fail_alone": bool(
            np.isfinite(head.loc[FAIL, "p"]) and head.loc[FAIL, "p"] <= 1 - LEVEL and head.loc[FAIL, "gain"] > 0
        ),
    }
    ks = list(true.index)
    weights = contrast_weights(DEFAULT_CONTRAST, ks, [comb(sc.n, k) for k in ks], 1)
    for s in STATISTICS:
        rows = summary[summary["k"] != 1]
        covered = (rows[f"d_{s}_lo"] <= rows["k"].map(true[s])) & (rows["k"].map(true[s]) <= rows[f"d_{s}_hi"])
        out[f"cover_{s}"] = covered.to_numpy()
        out[f"cover_{s}_kN"] = bool(covered.to_numpy()[-1])
        target = float(weights @ true[s].to_numpy())
        out[f"head_{s}"] = bool(head.loc[s, "lo"] <= target <= head.loc[s, "hi"])
    return out


def run_scenario(sc: Scenario, reps: int, jobs: int) -> dict:
    """Rates over ``reps`` sweeps with Monte-Carlo standard errors."""
    true = truth(sc, sc.r)
    with ProcessPoolExecutor(max_workers=jobs if jobs > 0 else os.cpu_count()) as pool:
        results = list(pool.map(one_sweep, [sc] * reps, [1000 + i for i in range(reps)], [true] * reps))

    def rate(x) -> tuple[float, float]:
        p = float(np.mean(x))
        return p, float(np.sqrt(p * (1 - p) / len(x)))

    def col(name: str) -> list:
        return [r[name] for r in results]

    last_calls = pd.Series(col("call"))
    row = {
        "scenario": sc.name,
        "N": sc.n,
        "r": sc.r,
        "primary": sc.primary,
        "null": sc.null,
        "old": sc.old,
        "claims": rate(col("claims")),
        "worst_better": rate(col("worst_better")),
        "any_better": rate(col("any_better")),
        "last_claims": rate(last_calls.isin(["better", "worse"])),
        "last_better": rate(last_calls == "better"),
        "mde": float(np.nanmedian(col("mde"))),
        "head_mde": float(np.nanmedian(col("head_mde"))),
        "wide": rate(np.nan_to_num(col("head_half"), nan=np.inf) > 0.1),
        "last_wide": rate(np.nan_to_num(col("last_half"), nan=np.inf) > 0.1),
        "head_half": float(np.nanmedian(col("head_half"))),
        "too_small": rate(col("too_small")),
        "fail_alone": rate(col("fail_alone")),
    }
    for s in STATISTICS:
        row[f"head_{s}"] = rate(col(f"head_{s}"))
        row[f"cover_{s}"] = rate(np.concatenate(col(f"cover_{s}")))
        row[f"cover_{s}_kN"] = rate(col(f"cover_{s}_kN"))
        per_k = np.array(col(f"cover_{s}"))  # sweeps x (k != 1)
        low = int(per_k.mean(0).argmin())
        row[f"cover_{s}_lowest"] = (*rate(per_k[:, low]), list(true.index)[low + 1])  # (rate, MCSE, k)
    return row


def scenarios(quick: bool) -> list[Scenario]:
    """Null scenarios over the designs, then effect scenarios for power and coverage, then the
    families of issue 27 (failed runs, small and partial designs, a spread changing with k, one
    poor teacher)."""
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
        effects = effects[:2] + effects[3:4]
    new = [
        Scenario("failed runs 10%, flat, N=6 r=3", fail=0.1, old=False),
        Scenario("failed runs 10%, flat, N=4 r=3", n=4, fail=0.1, old=False),
        Scenario("failed runs 10%, flat, N=6 r=3 primary", primary=True, sd_primary=0.004, fail=0.1, old=False),
        Scenario("partial k=1,2,6 N=6 r=3", ks=(1, 2, 6), old=False),
        Scenario("partial k=1,2,4 N=4 r=3", n=4, ks=(1, 2, 4), old=False),
        Scenario("spread x sqrt(k) N=6 r=3", spread="grow", sd_combination=0.004, old=False),
        Scenario("spread / sqrt(k) N=6 r=3", spread="shrink", sd_combination=0.004, old=False),
        Scenario("spread x sqrt(k) N=4 r=3", n=4, spread="grow", sd_combination=0.004, old=False),
        Scenario("one poor teacher (-0.03) N=6 r=3", poor=0.03, old=False),
        Scenario("one poor teacher (-0.03) N=4 r=3 primary", n=4, primary=True, sd_primary=0.004, poor=0.03, old=False),
        Scenario("failures 0.3/k N=6 r=3", fail=0.3, fail_shape="1/k", old=False),
        Scenario(
            "failures 0.3/k N=6 r=3 primary", primary=True, sd_primary=0.004, fail=0.3, fail_shape="1/k", old=False
        ),
        Scenario("failures 0.3/k N=4 r=3", n=4, fail=0.3, fail_shape="1/k", old=False),
        Scenario("failures 0.3/k N=6 r=5", r=5, fail=0.3, fail_shape="1/k", old=False),  # what more repeats buy
    ]
    crossed = [
        Scenario(f"seed x k {sd:g} N={n} r={r}", n=n, r=r, sd_seed_k=sd, old=False)
        for n, r in ((6, 3), (6, 5), (4, 3))
        for sd in (0.001, 0.003, 0.006)
    ]
    crossed += [
        Scenario(
            f"primary x k 0.003 N={n} r=3 primary", n=n, primary=True, sd_primary=0.004, sd_primary_k=0.003, old=False
        )
        for n in (6, 4)
    ]
    shapes = [
        Scenario("mean +0.008 along 1 - 1/k N=6 r=3", shift=0.008, shape="trend", old=False),
        Scenario("mean +0.008 step at k=2 N=6 r=3", shift=0.008, shape="step", old=False),
    ]
    if quick:
        crossed = [c for c in crossed if "N=6 r=3" in c.name and "0.003" in c.name]
    return out + effects + new + crossed + shapes


def fmt(pair: tuple[float, ...]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


OLD_HEADER = (
    "| scenario | claims an effect | says 'better' (power) | median MDE | cover worst | cover best | cover mean "
    "| cover worst at k=N | lowest per-k cover (worst / best / mean) |"
)
NEW_HEADER = (
    "| scenario | verdict claims an effect | worst case better (worst or failures) | any statistic better "
    "| k=N alone says better | cover worst / best / mean (headline) | median half-width worst (headline) "
    "| half-width > 0.1: headline / k=N | too small to tell | failure test alone |"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=500, help="simulated sweeps per scenario (default 500)")
    p.add_argument("--jobs", type=int, default=-1, help="processes (default: every core)")
    p.add_argument("--quick", action="store_true", help="fewer scenarios (a smoke run)")
    p.add_argument("--only", default="", help="only scenarios whose name contains this")
    args = p.parse_args(argv)
    start = time.perf_counter()
    rows, failures = [], []
    print(
        f"calibration: {args.reps} sweeps per scenario, {LEVEL:.0%} intervals; headline contrast "
        f"{DEFAULT_CONTRAST!r} over every k, the default graph over the failure rate / worst / mean / best"
    )
    for sc in scenarios(args.quick):
        if args.only not in sc.name:
            continue
        rows.append(run_scenario(sc, args.reps, args.jobs))
        print(f"done: {sc.name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    print("\nThe verdict (headline contrast, every k):\n")
    print(NEW_HEADER)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['scenario']} | {fmt(row['claims'])} | {fmt(row['worst_better'])} | {fmt(row['any_better'])} "
            f"| {fmt(row['last_better'])} | "
            + " / ".join(f"{row[f'head_{s}'][0]:.3f}" for s in STATISTICS)
            + f" | {row['head_half']:.4f} | {row['wide'][0]:.3f} / {row['last_wide'][0]:.3f}"
            + f" | {row['too_small'][0]:.3f} | {row['fail_alone'][0]:.3f} |"
        )
    print("\nThe per-k intervals (every k against k=1; k=N alone is the old headline):\n")
    print(OLD_HEADER)
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['scenario']} | {fmt(row['last_claims'])} | {fmt(row['last_better'])} | {row['mde']:.4f} "
            f"| {fmt(row['cover_worst_m'])} | {fmt(row['cover_best_m'])} | {fmt(row['cover_mean'])} "
            f"| {fmt(row['cover_worst_m_kN'])} | "
            + " / ".join(f"{row[f'cover_{s}_lowest'][0]:.3f} (k={row[f'cover_{s}_lowest'][2]})" for s in STATISTICS)
            + " |"
        )
    for row in rows:
        name = row["scenario"]
        if row["null"] and row["claims"][0] > 0.05 + 2 * row["claims"][1] + 1e-12:
            failures.append(f"{name}: verdict false-positive rate {fmt(row['claims'])} above 5% + 2 MCSE")
        for s in STATISTICS:
            if row[f"head_{s}"][0] < 0.93:
                failures.append(f"{name}: headline {s} coverage {fmt(row[f'head_{s}'])} below 0.93")
        if row["null"] and (row["N"] == 4 or "partial" in name) and row["wide"][0] > 0.01:
            failures.append(f"{name}: {row['wide'][0]:.3f} of sweeps with a headline worst half-width above 0.1")
        if row["null"] and "x k" in name:  # the crossed-factor nulls: every interval the report prints
            for s in STATISTICS:
                for key in (f"cover_{s}", f"cover_{s}_kN", f"cover_{s}_lowest"):
                    if row[key][0] < 0.93:
                        failures.append(f"{name}: {key} {fmt(row[key])} below 0.93")
        if row["old"]:  # the per-k intervals' targets, in the scenarios they were calibrated on
            if row["null"] and row["last_claims"][0] > 0.05 + 2 * row["last_claims"][1] + 1e-12:
                failures.append(f"{name}: k=N false-positive rate {fmt(row['last_claims'])} above 5% + 2 MCSE")
            for s in STATISTICS:
                for key in (f"cover_{s}", f"cover_{s}_kN", f"cover_{s}_lowest"):
                    if row[key][0] < 0.93:
                        failures.append(f"{name}: {key} {fmt(row[key])} below 0.93")
    targets = {
        "failures 0.3/k N=6 r=3": ("worst_better", 0.7),
        "failures 0.3/k N=6 r=5": ("worst_better", 0.88),
        "failures 0.3/k N=4 r=3": ("worst_better", 0.3),
        "mean +0.008 along 1 - 1/k N=6 r=3": ("any_better", 0.9),
        "shift +0.008 N=6 r=3": ("worst_better", 0.96),  # an earlier goal (2x the k=N reading's power)
    }
    for row in rows:
        if row["scenario"] in targets:
            key, goal = targets[row["scenario"]]
            if row[key][0] < goal:
                failures.append(f"{row['scenario']}: power {fmt(row[key])} below the goal {goal}")
        if row["scenario"].startswith("failures") and row["worst_better"][0] < 0.9 * row["fail_alone"][0]:
            failures.append(
                f"{row['scenario']}: found in {fmt(row['worst_better'])}, below 90% of the failure test alone "
                f"({fmt(row['fail_alone'])})"
            )
    print(f"\n{len(rows)} scenarios in {time.perf_counter() - start:.0f} s")
    for f in failures:
        print("FAIL", f)
    print("all targets met" if not failures else f"{len(failures)} target(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
