"""Robust statistics of a sweep: size-matched worst / best case, bootstrap confidence intervals,
IQM, tests of k teachers against one, and expected scores against a compute budget.

Every function works on the **runs table** of ``bench.aggregate`` (one row per run: ``k``,
``combination`` "0-3-4", ``repeat``, ``score``, ``status``, one column per grid axis, ``t_*``
timings, ``teacher_keys``), restricted to ok runs where it matters. The paper's own aggregation
stays in ``bench.aggregate``; this module adds what separates a robustness gain from the sample
size effect of that aggregation (with a primary teacher a k-combination has r*k runs, so its
min and max are extremes of more draws as k grows).

Sources are named in each docstring. Bootstrap draws use a fixed seed, so a report regenerated
from the same records is identical.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb
from typing import Sequence

import numpy as np
import pandas as pd

from bench.aggregate import _ok

TEACHER_COST_POLICIES = ("full", "amortised", "free")


# ---- order statistics ------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def extreme_weights(n: int, m: int, which: str) -> np.ndarray:
    """P(the min (or max) of m draws without replacement from n values is the i-th smallest),
    i = 1..n: C(n-i, m-1) / C(n, m) for the min, C(i-1, m-1) / C(n, m) for the max (the
    distribution of an order statistic of a simple random sample, e.g. David & Nagaraja,
    *Order Statistics*, 2003, sec. 2.1)."""
    if not 1 <= m <= n:
        raise ValueError(f"expected 1 <= m <= n, got m={m}, n={n}")
    i = np.arange(1, n + 1)
    top = [comb(n - j, m - 1) for j in i] if which == "min" else [comb(j - 1, m - 1) for j in i]
    w = np.array(top, dtype=float) / comb(n, m)
    w.flags.writeable = False  # cached: shared by every caller
    return w


def expected_extreme(values: Sequence[float], m: int, which: str) -> float:
    """The expected min (``which="min"``) or max of m runs drawn without replacement from
    ``values``; e.g. the expected max of 2 of {1, 2, 3} is 8/3."""
    x = np.sort(np.asarray(values, dtype=float))
    return float(extreme_weights(len(x), m, which) @ x)


def expected_best_of_n(values: Sequence[float], n: int, which: str = "max") -> float:
    """The expected max (or min) of n runs drawn with replacement from ``values`` (their
    empirical distribution): sum_i x_(i) [(i/N)^n - ((i-1)/N)^n] (Dodge et al. 2019, *Show Your
    Work*, eq. 1, expected validation performance for n trials)."""
    x = np.sort(np.asarray(values, dtype=float))
    if which == "min":
        x = x[::-1]
    big = len(x)
    i = np.arange(1, big + 1)
    return float(x @ ((i / big) ** n - ((i - 1) / big) ** n))


def iqm(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """The interquartile mean: the mean of the middle 50% of the runs, weighted by ``weights``
    when given (a run's mass is cut at the 25% and 75% quantiles). Agarwal et al. 2021,
    *Deep RL at the Edge of the Statistical Precipice* (rliable): robust to outlier runs, more
    efficient than the median."""
    x = np.asarray(values, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = w > 0
    x, w = x[keep], w[keep]
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order] / w.sum()
    hi = np.cumsum(w)
    lo = hi - w
    inside = np.clip(np.minimum(hi, 0.75) - np.maximum(lo, 0.25), 0, None)
    return float(inside @ x / inside.sum())


# ---- per combination and per k ----------------------------------------------------------------

def _runs_per_combination(ok: pd.DataFrame, grid: Sequence[str]) -> list:
    """[(grid values, k, combination, scores array, repeats array)] in table order."""
    out = []
    for key, g in ok.groupby([*grid, "k", "combination"], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        out.append((tuple(key[:len(grid)]), int(key[len(grid)]), key[len(grid) + 1],
                    g["score"].to_numpy(float), g["repeat"].to_numpy(int)))
    return out


def default_m(jobs: pd.DataFrame) -> int:
    """The default size of the size-matched worst / best case: the number of repeats r, which is
    what a combination has without a primary teacher and what the paper's k=1 point has."""
    ok = _ok(jobs)
    return int(ok["repeat"].nunique())


def size_matched_by_combination(jobs: pd.DataFrame, grid: Sequence[str] = (), m: int | None = None,
                                higher_is_better: bool = True) -> pd.DataFrame:
    """Per (grid point, k, combination): the expected worst and best of m of its runs (drawn
    without replacement; exact, ``expected_extreme``), its mean and n_runs. Unlike the paper's
    min / max, every combination's extremes are of the same number of runs, whatever k."""
    ok = _ok(jobs)
    m = m or default_m(ok)
    lo, hi = ("min", "max") if higher_is_better else ("max", "min")
    rows = []
    for point, k, c, scores, _ in _runs_per_combination(ok, grid):
        if len(scores) < m:
            raise ValueError(f"combination {c} at k={k} has {len(scores)} runs; size-matched m={m} needs >= m")
        rows.append({**dict(zip(grid, point)), "k": k, "combination": c,
                     "worst_m": expected_extreme(scores, m, lo), "best_m": expected_extreme(scores, m, hi),
                     "mean": float(scores.mean()), "n_runs": len(scores)})
    return pd.DataFrame(rows)


def _draw_stats(groups: list, teacher_w: np.ndarray, seed_mult: np.ndarray, m: int, lo: str, hi: str) -> dict:
    """Statistics per k for one set of weights: teacher weights (combination weight = product
    of its teachers') and integer multiplicities of the student seeds (repeats)."""
    per_k: dict[int, list] = {}
    for k, teachers, scores, repeats in groups:
        mult = seed_mult[repeats]
        if mult.sum() < m:
            continue
        expanded = np.repeat(scores, mult)
        w_c = float(np.prod(teacher_w[teachers]))
        per_k.setdefault(k, []).append((w_c, expected_extreme(expanded, m, lo), expected_extreme(expanded, m, hi),
                                        float(expanded.mean()), scores, mult))
    out = {}
    for k, rows in per_k.items():
        w = np.array([r[0] for r in rows])
        w = w / w.sum()
        run_values = np.concatenate([r[4] for r in rows])
        run_w = np.concatenate([wc * r[5] / r[5].sum() for wc, r in zip(w, rows)])
        out[k] = {"worst_m": float(w @ [r[1] for r in rows]), "best_m": float(w @ [r[2] for r in rows]),
                  "mean": float(w @ [r[3] for r in rows]), "iqm": iqm(run_values, run_w)}
    return out


def _groups(ok: pd.DataFrame) -> tuple[list, int, int]:
    rows = _runs_per_combination(ok, ())
    n_teachers = 1 + max(max(int(t) for t in c.split("-")) for _, _, c, _, _ in rows)
    n_repeats = 1 + int(ok["repeat"].max())
    groups = [(k, np.array([int(t) for t in c.split("-")]), s, r) for _, k, c, s, r in rows]
    return groups, n_teachers, n_repeats


def bootstrap_by_k(jobs: pd.DataFrame, m: int, higher_is_better: bool = True, n_boot: int = 2000,
                   seed: int = 0) -> tuple[dict, dict]:
    """Point estimates and bootstrap draws of the per-k statistics of one grid point.

    The resampling follows how a sweep is made: teacher seeds and student seeds are two crossed
    factors (every combination shares teachers with others; repeat j uses the same student seed
    in every combination), so runs are not independent and resampling runs or combinations
    would understate the uncertainty. Each draw (a two-way "pigeonhole" bootstrap, Owen 2007,
    *The pigeonhole bootstrap*, Ann. Appl. Stat.) reweights the teachers with Bayesian-bootstrap
    weights (Rubin 1981; Dirichlet(1, ..., 1), so no combination vanishes, which integer
    resampling of N=6 teachers would do to k=6 almost always) and resamples the student seeds
    with replacement. A combination's weight is the product of its teachers' weights. Limits:
    at k = N the single combination is fixed, so its interval reflects student seeds only; the
    teachers' own fine-tuning noise beyond these N seeds is not in any interval.

    Returns ({k: {stat: value}}, {k: {stat: array of n_boot draws}}) for stat in worst_m,
    best_m, mean, iqm.
    """
    ok = _ok(jobs)
    groups, n_teachers, n_repeats = _groups(ok)
    lo, hi = ("min", "max") if higher_is_better else ("max", "min")
    point = _draw_stats(groups, np.ones(n_teachers), np.ones(n_repeats, dtype=int), m, lo, hi)
    rng = np.random.default_rng(seed)
    draws: dict[int, dict[str, list]] = {k: {s: [] for s in ("worst_m", "best_m", "mean", "iqm")} for k in point}
    for _ in range(n_boot):
        tw = rng.dirichlet(np.ones(n_teachers)) * n_teachers
        sm = rng.multinomial(n_repeats, np.full(n_repeats, 1 / n_repeats))
        for k, stats in _draw_stats(groups, tw, sm, m, lo, hi).items():
            for s, v in stats.items():
                draws[k][s].append(v)
    return point, {k: {s: np.array(v) for s, v in d.items()} for k, d in draws.items()}


def _ci(draws: np.ndarray, level: float) -> tuple[float, float]:
    d = draws[np.isfinite(draws)]
    if len(d) == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


def _grid_points(ok: pd.DataFrame, grid: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    if not grid:
        return [({}, ok)]
    return [(dict(zip(grid, key if isinstance(key, tuple) else (key,))), g)
            for key, g in ok.groupby(list(grid), sort=True)]


def _bootstraps(ok: pd.DataFrame, grid: Sequence[str], m: int, higher_is_better: bool, n_boot: int,
                seed: int) -> list:
    """[(grid point, its runs, estimates, draws)] of ``bootstrap_by_k`` for each grid point."""
    return [(point, sub, *bootstrap_by_k(sub, m, higher_is_better, n_boot, seed))
            for point, sub in _grid_points(ok, grid)]


def _summary_rows(boots: list, m: int, level: float) -> pd.DataFrame:
    rows = []
    for point, sub, est, draws in boots:
        for k in sorted(est):
            row = {**point, "k": k}
            for s in ("worst_m", "best_m", "mean", "iqm"):
                row[s] = est[k][s]
                row[f"{s}_lo"], row[f"{s}_hi"] = _ci(draws[k][s], level)
            at_k = sub[sub["k"] == k]
            row.update(m=m, n_combinations=at_k["combination"].nunique(), n_runs=len(at_k))
            rows.append(row)
    return pd.DataFrame(rows)


def _comparison_rows(boots: list, base_k: int, m: int, higher_is_better: bool, level: float) -> pd.DataFrame:
    from scipy.stats import mannwhitneyu

    sign = 1.0 if higher_is_better else -1.0
    rows = []
    for point, sub, est, draws in boots:
        if base_k not in est:
            continue
        per_comb = size_matched_by_combination(sub, (), m, higher_is_better)
        base_vals = sign * per_comb.loc[per_comb["k"] == base_k, "worst_m"].to_numpy()
        for k in sorted(est):
            if k == base_k:
                continue
            vals = sign * per_comb.loc[per_comb["k"] == k, "worst_m"].to_numpy()
            lo, hi = _ci(sign * (draws[k]["worst_m"] - draws[base_k]["worst_m"]), level)
            u = mannwhitneyu(vals, base_vals, alternative="two-sided")
            rows.append({**point, "k": k, "base_k": base_k, "m": m,
                         "worst_m": est[k]["worst_m"], "worst_m_base": est[base_k]["worst_m"],
                         "diff": sign * (est[k]["worst_m"] - est[base_k]["worst_m"]), "diff_lo": lo, "diff_hi": hi,
                         "p_mwu": float(u.pvalue), "p_improve": float(u.statistic) / (len(vals) * len(base_vals)),
                         "n_k": len(vals), "n_base": len(base_vals)})
    return pd.DataFrame(rows)


def robust_summary(jobs: pd.DataFrame, grid: Sequence[str] = (), m: int | None = None,
                   higher_is_better: bool = True, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> pd.DataFrame:
    """Per (grid point, k): the size-matched worst / best case of m runs (mean over combinations
    of ``size_matched_by_combination``), the mean and the IQM of the runs, each with a
    ``level`` bootstrap percentile interval (``bootstrap_by_k``; for the extremes the interval
    is wide on the good side: a resampled set's min cannot fall below the sample's), plus m,
    n_combinations and n_runs."""
    return robust_tables(jobs, grid, m, higher_is_better, n_boot=n_boot, level=level, seed=seed)[0]


def compare_to_base(jobs: pd.DataFrame, grid: Sequence[str] = (), base_k: int = 1, m: int | None = None,
                    higher_is_better: bool = True, n_boot: int = 2000, level: float = 0.95,
                    seed: int = 0) -> pd.DataFrame:
    """Per (grid point, k != base_k): is the size-matched worst case at k better than at base_k?

    ``diff`` = worst_m(k) - worst_m(base) (sign turned so that > 0 is better for lower-is-better
    metrics), with a bootstrap interval from the same paired draws as ``bootstrap_by_k``;
    ``p_mwu`` = the two-sided Mann-Whitney U test (scipy) of the combinations' size-matched
    worst cases at k against those at base_k (it treats combinations as independent, which
    shared teachers are not: read it with the interval); ``p_improve`` = the probability of
    improvement P(X_k > X_base) + P(=)/2 over those combination pairs (= U / (n_k n_base);
    Agarwal et al. 2021, rliable), and ``n_k``, ``n_base`` combinations.
    """
    return robust_tables(jobs, grid, m, higher_is_better, base_k, n_boot, level, seed)[1]


def robust_tables(jobs: pd.DataFrame, grid: Sequence[str] = (), m: int | None = None,
                  higher_is_better: bool = True, base_k: int = 1, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``robust_summary`` and ``compare_to_base`` from one set of bootstrap draws."""
    ok = _ok(jobs)
    m = m or default_m(ok)
    boots = _bootstraps(ok, grid, m, higher_is_better, n_boot, seed)
    return _summary_rows(boots, m, level), _comparison_rows(boots, base_k, m, higher_is_better, level)


# ---- compute budget --------------------------------------------------------------------------

def charged_teacher_seconds(jobs: pd.DataFrame, teacher_seconds: dict[str, float], policy: str) -> dict[str, float]:
    """What one run is charged for each teacher it uses: ``full`` (the teacher's whole cost, as if
    each student were the only one trained from it: the paper's Figures 4-5), ``amortised`` (the
    cost shared equally by the ok runs of the sweep that use the teacher) or ``free`` (the
    teachers exist already, e.g. published checkpoints)."""
    if policy not in TEACHER_COST_POLICIES:
        raise ValueError(f"unknown teacher cost policy {policy!r}; expected one of {', '.join(TEACHER_COST_POLICIES)}")
    if policy == "full":
        return dict(teacher_seconds)
    if policy == "free":
        return {t: 0.0 for t in teacher_seconds}
    uses: dict[str, int] = {}
    for keys in _ok(jobs)["teacher_keys"]:
        for t in keys.split(","):
            uses[t] = uses.get(t, 0) + 1
    return {t: s / uses[t] for t, s in teacher_seconds.items() if t in uses}


def expected_by_budget(jobs: pd.DataFrame, teacher_seconds: dict[str, float], grid: Sequence[str] = (),
                       policy: str = "full", higher_is_better: bool = True, max_n: int = 20) -> pd.DataFrame:
    """Per (grid point, k, n = 1..max_n students trained): the compute spent (n x the mean cost
    of one run at k: its job's seconds plus teacher seconds under ``policy``) and the expected
    best, worst and mean score of those n students, each drawn at random from all runs at k
    (Dodge et al. 2019's expected validation performance, ``expected_best_of_n``; the worst is
    its mirror). Answers: for a budget of B seconds, which k gives the best expected outcome?"""
    ok = _ok(jobs).copy()
    charged = charged_teacher_seconds(ok, teacher_seconds, policy)
    ok["cost"] = ok["t_total"] + ok["teacher_keys"].map(lambda keys: sum(charged[t] for t in keys.split(",")))
    good, bad = ("max", "min") if higher_is_better else ("min", "max")
    rows = []
    for point, sub in _grid_points(ok, grid):
        for k, at_k in sub.groupby("k", sort=True):
            scores, cost = at_k["score"].to_numpy(float), float(at_k["cost"].mean())
            for n in range(1, max_n + 1):
                rows.append({**point, "k": int(k), "n": n, "compute_seconds": n * cost, "policy": policy,
                             "expected_best": expected_best_of_n(scores, n, good),
                             "expected_worst": expected_best_of_n(scores, n, bad), "mean": float(scores.mean())})
    return pd.DataFrame(rows)
