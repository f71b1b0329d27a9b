"""Calibrated statistics of a sweep: size-matched worst / best case, the contrast of k teachers
against one with an interval that holds its level, the paper's single- vs multi-teacher
comparison, degenerate results, and expected scores against a compute budget.

Every function works on the **runs table** of ``bench.analysis.aggregate`` (one row per run: ``k``,
``combination`` "0-3-4", ``primary`` (NA without one), ``repeat``, ``score``, ``status``, one
column per grid axis, ``t_*`` timings, ``teacher_keys``), restricted to ok runs where it
matters. The paper's own aggregation stays in ``bench.analysis.aggregate``.

The method (docs/statistics.md has the why, the sources and the simulation that checks it):
1. **Cells.** A cell is one (combination, primary) pair and its r student seeds. Its worst /
   best case is the expected min / max of m of its runs (exact; m = r by default). Taking
   extremes inside a cell, never across primaries, keeps the spread between primaries out of
   the worst case, and every k's extremes are of m runs (size-matched).
2. **Combinations.** A combination's statistic is the mean over its cells.
3. **The k model.** Per grid point and statistic, a least-squares fit of the combinations'
   statistics on one level per k plus additive teacher effects (each member weighted 1/k: the
   teachers' logits are averaged). In a full design the k-level contrast equals the plain
   difference of the per-k means and the teachers' own quality cancels from it; what it must
   beat is the spread between combinations, one variance per group of k's (a k with too few
   residuals joins its neighbours, so the one k = N combination borrows its noise), estimated
   with non-negative weights. Intervals and tests use Student's t with Satterthwaite degrees of
   freedom. The verdict's headline, a contrast over every k, and failed runs are in
   ``bench.analysis.robustness``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from math import comb

import numpy as np
import pandas as pd

from bench.analysis.aggregate import _ok
from bench.analysis.interactions import (
    SEED_BY_K,
    Interaction,
    complete_cells,
    primary_by_k,
    primary_exposure,
    seed_by_k,
    seed_exposures,
)
from bench.analysis.options import TEACHER_COST_POLICIES

STATISTICS = ("worst_m", "best_m", "mean")
POWER = 0.8  # the power at which the minimum detectable effect is stated


# ---- order statistics ------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def extreme_weights(n: int, m: int, which: str) -> np.ndarray:
    """P(the min (or max) of m draws without replacement from n values is the i-th smallest),
    i = 1..n: C(n-i, m-1) / C(n, m) for the min, C(i-1, m-1) / C(n, m) for the max (the
    distribution of an order statistic of a simple random sample, e.g. David & Nagaraja,
    *Order Statistics*, 2003, sec. 2.1)."""
    if not 1 <= m <= n:
        raise ValueError(f"expected 1 <= m <= n, got m={m}, n={n}")
    if which not in ("min", "max"):
        raise ValueError(f"expected which = 'min' or 'max', got {which!r}")
    i = np.arange(1, n + 1)
    top = [comb(n - j, m - 1) for j in i] if which == "min" else [comb(j - 1, m - 1) for j in i]
    w = np.array(top, dtype=float) / comb(n, m)
    w.flags.writeable = False  # cached: shared by every caller
    return w


def expected_extreme(values: Sequence[float], m: int, which: str) -> float:
    """The expected min (``which="min"``) or max of m runs drawn without replacement from
    ``values``; e.g. the expected max of 2 of {1, 2, 3} is 8/3. It is the unbiased estimate
    (a U-statistic) of the population's expected extreme of m runs."""
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


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean as rliable defines it (Agarwal et al. 2021): scipy's
    ``trim_mean(values, 0.25)``, the mean after cutting 25% of the runs from each end (whole
    runs, rounded down). Robust to a few diverged or outlier runs."""
    a = np.asarray(values, dtype=float).ravel()
    if a.size == 0 or np.isnan(a).any():  # scipy's trim_mean: NaN for no runs, NaN propagates
        return float("nan")
    cut = int(0.25 * a.size)
    # trim_mean's own steps (partition at both cuts, mean of the middle), so the same bits, without
    # importing scipy.stats (seconds of a report's time, mostly parsing docstrings)
    return float(np.partition(a, (cut, a.size - cut - 1))[cut : a.size - cut].mean())


# ---- cells and combinations -------------------------------------------------------------------


def default_m(jobs: pd.DataFrame) -> int:
    """The default size of the size-matched worst / best case: the number of repeats r (the runs
    of one cell)."""
    return int(_ok(jobs)["repeat"].nunique())


def _orient(higher_is_better: bool) -> tuple[str, str]:
    """(which extreme is the worst, which the best)."""
    return ("min", "max") if higher_is_better else ("max", "min")


def _with_primary(jobs: pd.DataFrame) -> pd.DataFrame:
    """``primary`` as an integer column, -1 where a method has none (so cells can be grouped)."""
    out = jobs.copy()
    col = out["primary"] if "primary" in out else pd.Series(pd.NA, index=out.index)
    out["primary"] = pd.array(col, dtype="Int64").fillna(-1).astype(int)
    return out


def run_weights(ok: pd.DataFrame, m: int, higher_is_better: bool = True) -> pd.DataFrame:
    """One row per ok run (``primary`` -1 without one; grid columns kept), sorted by cell and score,
    with the weight each size-matched statistic of its cell puts on it: ``worst_m`` / ``best_m``
    the probability that it is the worst / best of m runs drawn from the cell (``extreme_weights``
    by its rank), ``mean`` 1 / the cell's runs; ``n_runs`` and ``complete`` (the cell has at least m
    runs; otherwise its weights are 0). A cell's statistic is the sum of weight x score over its
    runs, so the weights also say how much of each seed's effect reaches it
    (``interactions.seed_exposures``)."""
    ok = _with_primary(ok)
    lo, hi = _orient(higher_is_better)
    keys = ["k", "combination", "primary"]
    ok = ok.sort_values([*keys, "score"], kind="stable")
    g = ok.groupby(keys, sort=False)
    n = g["score"].transform("size").to_numpy()
    rank = g.cumcount().to_numpy()  # 0 = the lowest score of its cell
    w_lo, w_hi = np.zeros(len(ok)), np.zeros(len(ok))
    for size in np.unique(n[n >= m]):
        at = n == size
        w_lo[at] = extreme_weights(int(size), m, lo)[rank[at]]
        w_hi[at] = extreme_weights(int(size), m, hi)[rank[at]]
    complete = n >= m
    return ok.assign(worst_m=w_lo, best_m=w_hi, mean=np.where(complete, 1.0 / n, 0.0), n_runs=n, complete=complete)


def cells(
    jobs: pd.DataFrame, grid: Sequence[str] = (), m: int | None = None, higher_is_better: bool = True
) -> pd.DataFrame:
    """Per (grid point, k, combination, primary) cell (primary -1 without one): the expected worst
    and best of m of its runs (``expected_extreme``), their mean, n_runs, and ``complete`` (False
    when the cell has fewer than m ok runs: its statistics are NaN and it is left out)."""
    ok = _ok(jobs)
    m = m or default_m(ok)
    parts = [run_weights(sub, m, higher_is_better) for _, sub in _grid_points(ok, grid)]
    return _cells_of(pd.concat(parts) if parts else run_weights(ok, m, higher_is_better), grid, m)


def _cells_of(w: pd.DataFrame, grid: Sequence[str], m: int) -> pd.DataFrame:
    """``cells`` from the ``run_weights`` of its runs."""
    keys = [*grid, "k", "combination", "primary"]
    score = w["score"].to_numpy(float)
    frame = w[keys].assign(worst_m=w["worst_m"].to_numpy() * score, best_m=w["best_m"].to_numpy() * score, mean=score)
    g = frame.groupby(keys, sort=True)
    out = g[["worst_m", "best_m"]].sum()
    out["mean"] = g["mean"].mean()
    out["n_runs"] = g.size()
    out = out.reset_index()
    out["complete"] = out["n_runs"] >= m
    out.loc[~out["complete"], ["worst_m", "best_m"]] = np.nan
    return out


def size_matched_by_combination(
    jobs: pd.DataFrame, grid: Sequence[str] = (), m: int | None = None, higher_is_better: bool = True
) -> pd.DataFrame:
    """Per (grid point, k, combination): worst_m, best_m and mean averaged over its complete
    cells (one per primary), n_cells and n_runs. Unlike the paper's min / max over all of a
    combination's runs, every k's extremes are of m runs of one cell, whatever k."""
    return _per_combination(cells(jobs, grid, m, higher_is_better), grid)


def _per_combination(cell_table: pd.DataFrame, grid: Sequence[str]) -> pd.DataFrame:
    """``size_matched_by_combination`` from a ``cells`` table."""
    c = cell_table[cell_table["complete"]]
    g = c.groupby([*grid, "k", "combination"], sort=True)
    out = g[list(STATISTICS)].mean()
    out["n_cells"] = g.size()
    out["n_runs"] = g["n_runs"].sum()
    return out.reset_index()


def single_teacher_by_combination(
    jobs: pd.DataFrame, grid: Sequence[str] = (), m: int | None = None, higher_is_better: bool = True
) -> pd.DataFrame:
    """The paper's single-teacher side (Ilichev et al. 2021, section 5.2: "in single teacher mode
    we simply reuse scores obtained with each teacher included in the combination"): per
    (grid point, k, combination), from the k=1 runs of its members,

    - ``single_worst`` / ``single_best``: the min / max over those runs pooled (k*r runs: the
      paper's numbers, which fall / rise with k from the pool's size alone);
    - ``single_worst_m`` / ``single_best_m``: the mean over members of each member's size-matched
      worst / best of m (the expected worst of m students of one member chosen at random).

    In a full design the size-matched single-teacher value at every k equals the k=1 value, so
    the size-matched multi - single gap is the contrast of k against k=1. Combinations with a
    member that has no k=1 run are left out."""
    ok = _ok(jobs)
    lo, hi = _orient(higher_is_better)
    pick = {"min": min, "max": max}
    ones = ok[ok["k"] == 1]
    raw = {key: (g.min(), g.max(), len(g)) for key, g in ones.groupby([*grid, "combination"])["score"]}
    sm = size_matched_by_combination(ones, grid, m, higher_is_better)
    matched = {
        tuple(key): (w, b)
        for key, w, b in zip(sm[[*grid, "combination"]].itertuples(index=False), sm["worst_m"], sm["best_m"])
    }
    rows = []
    for key in ok[[*grid, "k", "combination"]].drop_duplicates().itertuples(index=False):
        point, k, c = tuple(key[: len(grid)]), key[len(grid)], key[len(grid) + 1]
        members = [(*point, t) for t in c.split("-")]
        if not all(mb in raw for mb in members):
            continue
        row = {
            **dict(zip(grid, point)),
            "k": k,
            "combination": c,
            "single_worst": float(pick[lo](raw[mb][0 if lo == "min" else 1] for mb in members)),
            "single_best": float(pick[hi](raw[mb][0 if hi == "min" else 1] for mb in members)),
            "n_pooled": sum(raw[mb][2] for mb in members),
        }
        if all(mb in matched for mb in members):
            row["single_worst_m"] = float(np.mean([matched[mb][0] for mb in members]))
            row["single_best_m"] = float(np.mean([matched[mb][1] for mb in members]))
        rows.append(row)
    cols = [*grid, "k", "combination", "single_worst", "single_best", "n_pooled", "single_worst_m", "single_best_m"]
    return pd.DataFrame(rows).reindex(columns=cols)


# ---- the k model -------------------------------------------------------------------------------


MIN_GROUP_DF = 2.0  # residual degrees of freedom a variance group of k's needs before it stands alone


@dataclass(frozen=True)
class Crossed:
    """A factor crossed with k (the student seed; the primary teacher) in a ``KFit``: its
    interaction's estimate (``interactions.Interaction``), each fitted combination's exposure to it
    (rows: the fit's combinations; columns: the factor's levels), and ``in_resid``: per variance
    group, how much of the interaction's variance the group's residual variance already holds
    (its spread between the combinations of one k). A contrast with weights g on the combinations
    carries sigma^2 x sum over (k, level) of (sum_{c at k} g_c exposure_c,level)^2 of it in all,
    less what the residual part of its variance counts already. ``shrinks_with_repeats``: the
    seed x k part, which more repeats average down (a what-if for planning)."""

    interaction: Interaction
    exposure: np.ndarray
    in_resid: np.ndarray
    shrinks_with_repeats: bool

    def coefficient(self, g: np.ndarray, row_k: np.ndarray) -> float:
        """The factor by which the interaction's variance enters the contrast with weights ``g``."""
        weighted = g[:, None] * self.exposure
        return float(sum(((weighted[row_k == k].sum(0)) ** 2).sum() for k in np.unique(row_k)))


@dataclass(frozen=True)
class KFit:
    """A least-squares fit of one statistic of the combinations (one grid point) on k levels and
    additive teacher effects, with a variance for the residuals of each group of k's and the
    interactions with k of the factors crossed with it.

    ``coef[:len(ks)]`` are the k levels; ``proj`` maps the data to ``coef``; ``resid_map`` (I -
    hat matrix) maps it to the residuals. A combination's residual has the variance of its k's
    group: ``basis`` (n x G: group indicators times the cell shape v, ``_variance_function``) @
    ``theta`` (G variances); each k is its own group when
    its residuals carry at least ``MIN_GROUP_DF`` degrees of freedom, else it joins its neighbour
    towards the middle of the k's (the one k = N combination, fitted exactly, always does).
    ``weights`` (G x n, every entry >= 0) maps the squared residuals to ``theta``; ``share`` = 1 /
    cells per combination; ``df`` the residual degrees of freedom of the fit.
    ``teacher_effects`` is False when the design could not separate them from the k levels
    (then they are left out). ``crossed``: the seed x k and primary x k terms every contrast
    carries besides (``Crossed``); ``row_k`` and ``resid``: each fitted combination's k and
    residual."""

    ks: tuple[int, ...]
    counts: tuple[int, ...]  # combinations per k
    coef: np.ndarray
    proj: np.ndarray
    resid_map: np.ndarray
    basis: np.ndarray
    share: np.ndarray
    weights: np.ndarray  # G x n: theta = weights @ squared residuals
    theta: np.ndarray
    groups: tuple[tuple[int, ...], ...]  # the k's of each variance group
    df: int
    teacher_effects: bool
    row_k: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    crossed: tuple[Crossed, ...] = ()
    resid: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def variance(self, vec: np.ndarray, extra_cell: float = 0.0, seed_scale: float = 1.0) -> tuple[float, float]:
        """Var(vec @ coef) and its degrees of freedom: the residual part sum_c g_c^2 sigma^2(k_c)
        with g = vec @ proj, plus each crossed factor's interaction (``Crossed.coefficient`` x its
        variance). The residual part is a quadratic form r'Dr in the residuals r ~ N(0, M S M) (M =
        I - hat matrix, S = diag(sigma^2(k))) with D >= 0, so its df = 2 E^2 / Var = tr(DMSM)^2 /
        tr((DMSM)^2) (Satterthwaite 1946), at least the smallest group's share of the df and
        never the collapse that signed weights give; each interaction's estimate rests on its own
        estimate's df (at least 1), and the sum's df is Satterthwaite's over the parts; the
        interaction's spread within a k, which the residuals hold, is counted once. ``extra_cell`` adds to
        every cell's variance and ``seed_scale`` multiplies the seed x k part (what-ifs for
        planning: more repeats shrink both)."""
        if self.df <= 0 or not np.all(np.isfinite(self.theta)):
            return float("nan"), 0.0
        g = vec @ self.proj
        g2 = g**2
        coeffs = g2 @ self.basis
        var = float(coeffs @ self.theta)
        d = coeffs @ self.weights  # r'Dr = the estimate, D diagonal
        sig2 = self.basis @ self.theta
        dms = d[:, None] * (self.resid_map * sig2[None, :]) @ self.resid_map  # D M S M
        tr2 = float(np.einsum("ij,ji->", dms, dms))
        df = float(np.trace(dms)) ** 2 / tr2 if tr2 > 0 else float(self.df)
        total = var + extra_cell * float(g2 @ self.share)
        denominator, added = (var**2 / df if df > 0 else 0.0), False
        for term in self.crossed:
            sigma2 = term.interaction.variance
            if not (np.isfinite(sigma2) and sigma2 > 0):
                continue
            # in all, less what the residual part already counts of it (never below 0)
            part = sigma2 * max(0.0, term.coefficient(g, self.row_k) - float(coeffs @ term.in_resid))
            if term.shrinks_with_repeats:
                part *= seed_scale
            total += part
            denominator += part**2 / max(term.interaction.variance_df, 1.0)
            added = part > 0 or added
        if added and denominator > 0:
            df = total**2 / denominator
        return total, df


def _design(per_comb: pd.DataFrame, teacher_effects: bool) -> tuple[np.ndarray, tuple[int, ...]]:
    ks = tuple(sorted(int(k) for k in per_comb["k"].unique()))
    members = [[int(t) for t in c.split("-")] for c in per_comb["combination"]]
    cols = [(per_comb["k"].to_numpy() == k).astype(float) for k in ks]
    if teacher_effects:
        teachers = sorted({t for ms in members for t in ms})[1:]  # the first is the reference
        cols += [np.array([(t in ms) / len(ms) for ms in members]) for t in teachers]
    return np.column_stack(cols), ks


def variance_groups(k: np.ndarray, leverage_left: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """The k's grouped for the residual variance: from the largest k down, a k joins the k's
    below it until the group's residuals carry ``MIN_GROUP_DF`` degrees of freedom
    (``leverage_left``: the diagonal of M = I - hat matrix, whose sum over a group is its df); a
    smallest group short of that joins the one above. So every k with enough residuals has its
    own variance (a spread that grows or shrinks with k, in either direction, is followed), and
    a k with too few (the one k = N combination, fitted exactly) borrows its neighbours'."""
    groups: list[list[int]] = []
    current: list[int] = []
    for kk in sorted((int(x) for x in np.unique(k)), reverse=True):
        current.append(kk)
        if float(leverage_left[np.isin(k, current)].sum()) >= MIN_GROUP_DF:
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1] += current
        else:
            groups.append(current)
    return tuple(tuple(sorted(g)) for g in sorted(groups, key=min))


def _cell_shape(r2: np.ndarray, resid_map: np.ndarray, share: np.ndarray) -> np.ndarray:
    """The shape a + b * share of the residual variance over the combinations (share = 1 / cells
    per combination: a combination's value averages its cells, one per primary), by the moment
    equations E[r^2] = (M o M) [1, share] (a, b) (Searle, Casella & McCulloch 1992, ch. 4),
    constrained to a, b >= 0 and scaled to mean 1. It only spreads a pooled group's variance
    over its k's (``_variance_function``); it is constant, so changes nothing, where every
    combination has the same number of cells (no primary)."""
    n = len(r2)
    flat = np.ones(n)
    moments = (resid_map * resid_map) @ np.column_stack([np.ones(n), share])
    if len(np.unique(share)) < 2 or np.linalg.matrix_rank(moments) < 2:
        return flat
    a, b = np.linalg.pinv(moments) @ r2
    if b <= 0:
        return flat
    v = share if a <= 0 else a + b * share
    return v / float(v.mean())


def _variance_function(
    r2: np.ndarray, resid_map: np.ndarray, k: np.ndarray, share: np.ndarray, df: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[tuple[int, ...], ...]]:
    """(basis, weights, theta, groups) of the residual variance per group of k's: sigma^2_c =
    theta_g * v_c for combination c in group g, v the ``_cell_shape`` (1 without a primary), and
    theta_g = sum of the group's squared residuals / sum of their M_cc v_c (M = I - hat matrix),
    the moment estimate when the variance within the group follows v (E[r_c^2] ~ M_cc sigma_c^2).
    The shape matters where a k with too few residuals shares its neighbour's variance: with a
    primary, k = 1 (one cell per combination, whose residuals the teacher effects nearly absorb)
    has more variance than k = 2, and one level for both would understate it. Every weight is
    >= 0, so the estimate is never negative and its Satterthwaite df cannot collapse (the exact
    moment equations, with what leaks between groups through M, have weights of both signs:
    tried, they cost a quarter more interval width and a third of the power; docs/statistics.md
    section 3)."""
    n = len(r2)
    if df <= 0:
        return np.ones((n, 1)), np.zeros((1, n)), np.array([float("nan")]), (tuple(sorted(set(int(x) for x in k))),)
    lev = np.clip(np.diag(resid_map), 0.0, None)
    groups = variance_groups(k, lev)
    v = _cell_shape(r2, resid_map, share)
    member = [np.isin(k, g).astype(float) for g in groups]
    basis = np.column_stack([b * v for b in member])
    weights = np.vstack([b / float(lev @ (b * v)) for b in member])
    return basis, weights, weights @ r2, groups


def fit_k_model(per_comb: pd.DataFrame, stat: str, crossed: Sequence[tuple[Interaction, np.ndarray]] = ()) -> KFit:
    """Fit ``stat`` of the combinations of one grid point (rows of ``size_matched_by_combination``)
    as level(k) + the mean of its members' teacher effects + residual, by least squares, and the
    residual variance per group of k's (``_variance_function``). Teacher effects are left out
    when the design cannot separate them from the k levels. ``crossed``: the interactions with k
    of the factors crossed with it, each with its exposure per row of ``per_comb`` (``Crossed``;
    ``point_model`` builds them from the runs)."""
    finite = np.isfinite(per_comb[stat].to_numpy(float))
    data = per_comb[finite]
    y = data[stat].to_numpy(float)
    for teacher_effects in (True, False):
        x, ks = _design(data, teacher_effects)
        if np.linalg.matrix_rank(x) == x.shape[1]:
            break
    proj = np.linalg.inv(x.T @ x) @ x.T
    coef = proj @ y
    df = len(y) - x.shape[1]
    resid_map = np.eye(len(y)) - x @ proj
    resid = resid_map @ y
    k = data["k"].to_numpy(int)
    share = 1.0 / data["n_cells"].to_numpy(float)
    basis, weights, theta, groups = _variance_function(resid**2, resid_map, k, share, df)
    counts = tuple(int((data["k"] == kk).sum()) for kk in ks)
    return KFit(
        ks,
        counts,
        coef,
        proj,
        resid_map,
        basis,
        share,
        weights,
        theta,
        groups,
        df,
        teacher_effects,
        k,
        tuple(_crossed(i, e[finite], resid_map, weights, k) for i, e in crossed),
        resid,
    )


def _crossed(
    interaction: Interaction, exposure: np.ndarray, resid_map: np.ndarray, weights: np.ndarray, k: np.ndarray
) -> Crossed:
    """A ``Crossed`` term of a fit: with a unit interaction variance, the expected squared residuals
    it causes are diag(M S M), S[c, c'] = exposure_c . exposure_c' for combinations of one k (they
    share its terms), 0 across k's; ``weights`` maps them to the groups' variances."""
    footprint = np.zeros(len(k))
    for kk in np.unique(k):
        at = k == kk
        footprint += ((resid_map[:, at] @ exposure[at]) ** 2).sum(1)
    return Crossed(interaction, exposure, weights @ footprint, interaction.name == SEED_BY_K)


@dataclass(frozen=True)
class PointModel:
    """The k model of one grid point: its combinations' statistics (``size_matched_by_combination``),
    the fit of each statistic, and the interactions with k of the factors crossed with it (seed x k
    and primary x k, ``bench.analysis.interactions``), which every fit's contrasts carry."""

    per_comb: pd.DataFrame
    fits: dict[str, KFit]
    interactions: tuple[Interaction, ...]
    repeats: int = 0  # the student seeds among the runs
    teachers: int = 0  # N, as the runs' combinations name them


def teacher_count(runs: pd.DataFrame) -> int:
    """N: one more than the largest teacher index in the runs' combinations."""
    return 1 + max((max(int(t) for t in c.split("-")) for c in runs["combination"].unique()), default=-1)


def point_model(
    runs: pd.DataFrame, m: int, higher_is_better: bool = True, statistics: Sequence[str] = STATISTICS
) -> PointModel:
    """Fit the k model (``fit_k_model``) of each statistic of one grid point's ok runs, with the
    seed x k and primary x k interactions (``interactions.seed_by_k``, ``primary_by_k``) and each
    combination's exposure to them, so every contrast's variance holds them."""
    w = run_weights(runs, m, higher_is_better)
    per_comb = _per_combination(_cells_of(w, (), m), ())
    teachers = teacher_count(runs)
    full = complete_cells(w)
    seed = seed_by_k(w, teachers, full)
    primary = primary_by_k(w, teachers, full)
    fits: dict[str, KFit] = {}
    repeats = int(runs["repeat"].nunique())
    if per_comb.empty:
        return PointModel(per_comb, fits, (seed, primary), repeats, teachers)
    exposure = seed_exposures(w, per_comb, statistics) if seed.estimable else {}
    by_primary = primary_exposure(w, per_comb, teachers) if primary.estimable else None
    for s in statistics:
        crossed = []
        if seed.estimable:
            crossed.append((seed, exposure[s]))
        if by_primary is not None:
            crossed.append((primary, by_primary))
        fits[s] = fit_k_model(per_comb, s, crossed)
    return PointModel(per_comb, fits, (seed, primary), repeats, teachers)


@dataclass(frozen=True)
class Contrast:
    """level(k) - level(base) of a ``KFit``: estimate, standard error, t interval at ``level``,
    two-sided p-value and (Satterthwaite) df; NaN interval and p when the design leaves no
    residual degrees of freedom (too small to tell)."""

    estimate: float
    se: float
    lo: float
    hi: float
    p: float
    df: float


def _vector(fit: KFit, k: int, base_k: int) -> np.ndarray:
    vec = np.zeros(len(fit.coef))
    vec[fit.ks.index(k)], vec[fit.ks.index(base_k)] = 1.0, -1.0
    return vec


def _t_ppf(q: float, df: float) -> float:
    """Student's t quantile: what ``scipy.stats.t.ppf`` computes (``scipy.special.stdtrit``), without
    importing scipy.stats, whose import alone cost a report seconds."""
    from scipy.special import stdtrit  # lazy: scipy only when a report computes statistics

    return float(stdtrit(df, q))


def _t_sf(x: float, df: float) -> float:
    """Student's t survival function: what ``scipy.stats.t.sf`` computes (``scipy.special.stdtr(df, -x)``)."""
    from scipy.special import stdtr  # lazy: scipy only when a report computes statistics

    return float(stdtr(df, -x))


def contrast(fit: KFit, k: int, base_k: int, level: float = 0.95) -> Contrast:
    """The k-level contrast of ``fit`` with a Student-t interval."""
    return linear_contrast(fit, _vector(fit, k, base_k), level)


def linear_contrast(fit: KFit, vec: np.ndarray, level: float = 0.95) -> Contrast:
    """``vec @ fit.coef`` (any fixed linear contrast of the coefficients) with a Student-t interval."""
    est = float(vec @ fit.coef)
    var, df = fit.variance(vec)
    if not df > 0 or not var > 0:  # no noise could be estimated: nothing to test against
        return Contrast(est, float("nan"), float("nan"), float("nan"), float("nan"), df)
    se = float(np.sqrt(var))
    q = _t_ppf(0.5 + level / 2, df)
    p = float(2 * _t_sf(abs(est) / se, df))
    return Contrast(est, se, est - q * se, est + q * se, p, df)


def minimum_detectable(se: float, df: float, level: float = 0.95, power: float = POWER) -> float:
    """The smallest true contrast that a two-sided t test at ``1 - level`` detects with
    probability ``power``: (t_{(1+level)/2} + t_power) * se on df degrees of freedom."""
    if not df > 0 or not np.isfinite(se):
        return float("nan")
    return float((_t_ppf(0.5 + level / 2, df) + _t_ppf(power, df)) * se)


@lru_cache(maxsize=256)
def extreme_noise_factor(m: int, r: int, draws: int = 10000) -> float:
    """Var of the expected min of m of r runs (``expected_extreme``) when the runs are iid
    N(0, 1): the share of the run noise that reaches one cell's worst case. A fixed-seed Monte
    Carlo (same answer every call); 1/r when m = 1 (the mean)."""
    if m == 1:
        return 1.0 / r
    z = np.sort(np.random.default_rng(12345).standard_normal((draws, r)), axis=1)
    return float((z @ extreme_weights(r, m, "min")).var())


def run_noise_variance(jobs: pd.DataFrame) -> tuple[float, int]:
    """The variance of one run around its cell once the student seed's shared effect is taken
    out (two-way residual, cell x repeat, within each k of one grid point; cells missing a
    repeat are left out), with its df; NaN with r = 1."""
    ok = _with_primary(_ok(jobs)).sort_values(["k", "combination", "primary", "repeat"])
    r = ok["repeat"].nunique()
    size = ok.groupby(["k", "combination", "primary"], sort=False)["score"].transform("size").to_numpy()
    full = ok[size == r]
    ss, df = 0.0, 0
    for k in np.unique(full["k"].to_numpy()):
        a = full["score"].to_numpy(float)[full["k"].to_numpy() == k].reshape(-1, r)
        if a.shape[0] < 2 or r < 2:
            continue
        resid = a - a.mean(1, keepdims=True) - a.mean(0, keepdims=True) + a.mean()
        ss += float((resid**2).sum())
        df += (a.shape[0] - 1) * (r - 1)
    return (ss / df if df else float("nan")), df


def repeats_needed(
    fit: KFit, k: int, base_k: int, target: float, sub: pd.DataFrame, m: int, level: float = 0.95, max_r: int = 50
) -> tuple[int | None, float]:
    """(the smallest number of repeats r' (m fixed) at which the minimum detectable worst-case
    contrast of k against base_k falls to ``target``, the share of the contrast's variance that
    more repeats reduce). The run noise that reaches a cell (``run_noise_variance`` x
    ``extreme_noise_factor``, runs taken as independent within a cell) shrinks with r', and so does
    the seed x k interaction (taken to fall as r / r', as it does for the mean); the rest of the
    fitted variance (combination, cell and primary x k effects) does not. r' is None when no r' <=
    max_r would; the share is NaN with r = 1 (the split is not identifiable). An approximation
    for planning, stated as such."""
    r = int(sub["repeat"].nunique())
    w2, _ = run_noise_variance(sub)
    vec = _vector(fit, k, base_k)
    if r < 2 or not np.isfinite(w2) or fit.df <= 0:
        return None, float("nan")
    now, _ = fit.variance(vec)
    rest, _ = fit.variance(vec, extra_cell=-extreme_noise_factor(m, r) * w2, seed_scale=0.0)
    share = float(np.clip(1 - rest / now, 0, 1)) if now > 0 else float("nan")
    for r2 in range(max(r, m), max_r + 1):
        var, df = fit.variance(
            vec, extra_cell=(extreme_noise_factor(m, r2) - extreme_noise_factor(m, r)) * w2, seed_scale=r / r2
        )
        if minimum_detectable(np.sqrt(max(var, 0.0)), df, level) <= target:
            return r2, share
    return None, share


# ---- per k tables ------------------------------------------------------------------------------


def _grid_points(ok: pd.DataFrame, grid: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    if not grid:
        return [({}, ok)]
    return [
        (dict(zip(grid, key if isinstance(key, tuple) else (key,))), g) for key, g in ok.groupby(list(grid), sort=True)
    ]


def _summary_rows(
    point: dict, sub: pd.DataFrame, per_comb: pd.DataFrame, single: pd.DataFrame, contrasts: dict, m: int
) -> list[dict]:
    by_k = per_comb.groupby("k")
    means = by_k[list(STATISTICS)].mean()
    cells_at = by_k["n_cells"].sum()
    singles = single.groupby("k")[["single_worst", "single_best", "single_worst_m", "single_best_m"]].mean()
    runs = {int(k): g.to_numpy(float) for k, g in sub.groupby("k")["score"]}
    rows = []
    for k in means.index:
        row = {
            **point,
            "k": int(k),
            **means.loc[k].to_dict(),
            "iqm": iqm(runs[int(k)]),
            **(singles.loc[k].to_dict() if k in singles.index else dict.fromkeys(singles.columns, np.nan)),
        }
        for s in STATISTICS:
            c = contrasts.get((s, int(k)), Contrast(*(float("nan"),) * 6))  # none at the base k
            row.update({f"d_{s}": c.estimate, f"d_{s}_lo": c.lo, f"d_{s}_hi": c.hi})
        row.update(m=m, n_combinations=int(by_k.size()[k]), n_cells=int(cells_at[k]), n_runs=len(runs[int(k)]))
        rows.append(row)
    return rows


def _comparison_rows(
    point: dict,
    sub: pd.DataFrame,
    per_comb: pd.DataFrame,
    worst_fit: KFit,
    contrasts: dict,
    base_k: int,
    m: int,
    higher: bool,
    level: float,
) -> list[dict]:
    sign = 1.0 if higher else -1.0
    if base_k not in worst_fit.ks:
        return []
    rows = []
    for k in worst_fit.ks:
        if k == base_k:
            continue
        row = {
            **point,
            "k": k,
            "base_k": base_k,
            "m": m,
            "r": int(sub["repeat"].nunique()),
            "primary": bool(sub["primary"].notna().any()) if "primary" in sub else False,
        }
        for s in STATISTICS:
            c = contrasts[(s, k)]
            lo, hi = sorted((sign * c.lo, sign * c.hi)) if np.isfinite(c.lo) else (c.lo, c.hi)
            row.update(
                {f"gain_{s}": sign * c.estimate, f"gain_{s}_lo": lo, f"gain_{s}_hi": hi, f"p_{s}": c.p, f"se_{s}": c.se}
            )
        worst = contrasts[("worst_m", k)]
        row["df"] = worst.df
        row["mde_worst_m"] = minimum_detectable(worst.se, worst.df, level)
        row["worst_m_k"] = float(per_comb.loc[per_comb["k"] == k, "worst_m"].mean())
        row["worst_m_base"] = float(per_comb.loc[per_comb["k"] == base_k, "worst_m"].mean())
        # the verdict's row (largest k) alone carries the planning figure
        last = k == max(worst_fit.ks) and np.isfinite(row["mde_worst_m"])
        row["repeats_needed"], row["run_noise_share"] = (
            repeats_needed(worst_fit, k, base_k, row["mde_worst_m"] / 2, sub, m, level) if last else (None, np.nan)
        )
        row["teacher_effects"] = worst_fit.teacher_effects
        row["constant"] = bool(sub["score"].nunique() == 1)
        row["n_k"], row["n_base"] = (
            worst_fit.counts[worst_fit.ks.index(k)],
            worst_fit.counts[worst_fit.ks.index(base_k)],
        )
        rows.append(row)
    return rows


def robust_tables(
    jobs: pd.DataFrame,
    grid: Sequence[str] = (),
    m: int | None = None,
    higher_is_better: bool = True,
    base_k: int = 1,
    level: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The size-matched statistics per k and the contrasts of every k against ``base_k``.

    First table, per (grid point, k): worst_m, best_m, mean (means over combinations of
    ``size_matched_by_combination``), iqm (rliable's, over the runs at k), the paper's
    single-teacher pooled worst / best and their size-matched versions
    (``single_teacher_by_combination``), and for each statistic s the fitted contrast against
    base_k, ``d_s`` with its ``level`` interval ``d_s_lo``, ``d_s_hi`` (raw direction: for
    perplexity a negative d is better); m, n_combinations, n_cells, n_runs.

    Second table, per (grid point, k != base_k): ``gain_s`` = the contrast turned so that > 0 is
    better (lower perplexity too), its interval and two-sided p-value ``p_s`` for s in
    worst_m, best_m, mean; df; ``mde_worst_m`` = the smallest worst-case change this design
    detects with 80% power; ``repeats_needed`` (largest k only) = the repeats that would halve
    it (approximate, see ``repeats_needed``); n_k, n_base combinations.
    """
    ok = _ok(jobs)
    m = m or default_m(ok)
    summary, comparison = [], []
    for point, sub in _grid_points(ok, grid):
        model = point_model(sub, m, higher_is_better)
        per_comb, fits = model.per_comb, model.fits
        if per_comb.empty:
            continue
        single = single_teacher_by_combination(sub, (), m, higher_is_better)
        contrasts = {
            (s, k): contrast(fit, k, base_k, level)
            for s, fit in fits.items()
            if base_k in fit.ks
            for k in fit.ks
            if k != base_k
        }  # each one once, for both tables
        summary += _summary_rows(point, sub, per_comb, single, contrasts, m)
        comparison += _comparison_rows(
            point, sub, per_comb, fits["worst_m"], contrasts, base_k, m, higher_is_better, level
        )
    return pd.DataFrame(summary), pd.DataFrame(comparison)


def call(row: pd.Series | dict, stat: str = "worst_m") -> str:
    """The verdict's reading of one comparison row: "better" / "worse" when the interval of the
    gain excludes 0 (on the good / bad side), "unclear" when it includes 0, "untestable" when
    the design leaves no residual degrees of freedom."""
    lo, hi = row[f"gain_{stat}_lo"], row[f"gain_{stat}_hi"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "untestable"
    return "better" if lo > 0 else "worse" if hi < 0 else "unclear"


# ---- degenerate results ----------------------------------------------------------------------


def degenerate_notes(jobs: pd.DataFrame, grid: Sequence[str] = ()) -> list[str]:
    """Sentences naming what makes the results unfit for a conclusion: every ok run with the
    same headline score (per grid point), runs whose predictions are one class for every
    example (column ``constant_predictions`` of the runs table), and score columns equal in
    every run (e.g. an accuracy stuck at 0)."""
    ok = _ok(jobs)
    notes: list[str] = []
    if ok.empty:
        return notes
    for point, sub in _grid_points(ok, grid):
        where = "".join(f" at {g}={v:g}" for g, v in point.items())
        if len(sub) > 1 and sub["score"].nunique() == 1:
            notes.append(
                f"every run{where} has the same score ({sub['score'].iloc[0]:.4g}): "
                "nothing varies, so nothing about k can be concluded"
            )
    if "constant_predictions" in ok:
        n = int(ok["constant_predictions"].fillna(False).astype(bool).sum())
        if n:
            notes.append(
                f"{n} of {len(ok)} runs predict the same class for every example (a constant "
                "classifier): their scores say nothing about distillation"
            )
    skip = {"score", "repeat", "k", "attempts", "n_params", "constant_predictions", *grid}
    for col in ok.columns:
        if col in skip or col.startswith("t_") or not pd.api.types.is_numeric_dtype(ok[col]):
            continue
        values = ok[col].dropna()
        if len(values) > 1 and values.nunique() == 1 and "_" in col:
            notes.append(f"`{col}` is {values.iloc[0]:.4g} in every run: at its floor or ceiling, uninformative here")
    return notes


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


def expected_by_budget(
    jobs: pd.DataFrame,
    teacher_seconds: dict[str, float],
    grid: Sequence[str] = (),
    policy: str = "full",
    higher_is_better: bool = True,
) -> pd.DataFrame:
    """Per (grid point, k, n = 1 .. the runs at k): the compute spent (n x the mean cost of one
    run at k: its job's seconds plus teacher seconds under ``policy``) and the expected best,
    worst and mean score of n students drawn at random from the runs at k (Dodge et al. 2019's
    expected validation performance, ``expected_best_of_n``; the worst is its mirror). n stops
    at the number of runs at k: past it the curve only repeats the sample's extreme. Answers:
    for a budget of B seconds, which k gives the best expected outcome?"""
    ok = _ok(jobs).copy()
    charged = charged_teacher_seconds(ok, teacher_seconds, policy)
    ok["cost"] = ok["t_total"] + ok["teacher_keys"].map(lambda keys: sum(charged[t] for t in keys.split(",")))
    good, bad = ("max", "min") if higher_is_better else ("min", "max")
    rows = []
    for point, sub in _grid_points(ok, grid):
        for k, at_k in sub.groupby("k", sort=True):
            scores, cost = at_k["score"].to_numpy(float), float(at_k["cost"].mean())
            for n in range(1, len(scores) + 1):
                rows.append(
                    {
                        **point,
                        "k": int(k),
                        "n": n,
                        "compute_seconds": n * cost,
                        "policy": policy,
                        "expected_best": expected_best_of_n(scores, n, good),
                        "expected_worst": expected_best_of_n(scores, n, bad),
                        "mean": float(scores.mean()),
                    }
                )
    return pd.DataFrame(rows)
