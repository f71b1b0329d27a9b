"""Factors crossed with k, whose interaction with k is part of every contrast over k.

Every k reuses the same student seeds (repeat j uses seed ``student.seed + j`` at every k) and,
with a primary teacher, the same primaries (each teacher is the primary at every k). A seed's
effect that is not the same at every k (a seed x k interaction) shifts every combination of one k
alike, so the residuals of the k model (``stats.fit_k_model``), which compare combinations of one
k, never show it; yet it moves the k levels, and with r = 3 seeds it does not average out. In a
repeated-measures (split-plot) design it is an error term of the k contrast. The same holds for a
primary whose own effect differs between k's (primary x k).

This module estimates each interaction's variance by moments on the runs of one grid point, with
an F test of "no interaction", and gives each combination's *exposure* to it (how much of each
seed's, or primary's, interaction term its statistic carries), so that ``stats.KFit.variance``
adds sigma^2 x sum over (k, level) of (sum over the combinations c at k of g_c exposure_c,level)^2
to the variance of a contrast with weights g on the combinations, less the part of it that the
residuals already hold. Each sum of squares is a quadratic form in normal variables: its F test
takes Satterthwaite's numerator df (cells per k differ), and each estimate, a difference of mean
squares, its own Satterthwaite df (Satterthwaite 1946), both from ``_moments``.

The estimators (docs/statistics.md, section 3):

- **seed x k**: the k x seed table of run means over the complete cells of each k (cells holding
  every seed). Its two-way interaction sum of squares SS has (K - 1)(r - 1) degrees of freedom and
  E[SS] = (K - 1)(r - 1) sigma^2_sk + (1 - 1/K)(r - 1) sum_k sigma^2_run / n_k (n_k cells at k).
  sigma^2_run is the run noise net of the seed's interaction with the teachers (teacher x seed,
  and primary x seed where there is one: fitted on the within-k residuals of cells x seeds and
  taken out, since with 1/k weights such terms are the same at every k and cancel from the
  contrast); sigma^2_sk = max(0, (SS - that noise) / df). A seed's exposure at k is pooled over the
  cells of that k (the chance that its run is a cell's worst, say): the part of a cell's own
  exposure beyond that varies between the cells of one k and is in the residuals already.
- **primary x k**: for each k >= 2, the cell means fitted on combination and primary effects; the
  primaries' effects of each k, centred, form an N x K' table whose variation over k beyond each
  primary's own effect is the interaction: (N - 1)(K' - 1) degrees of freedom, its noise part from
  the fit's residual variance and the effects' covariance. k = 1 (one cell per combination) cannot
  show it: its variance there is taken to be the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

SEED_BY_K = "seed x k"
PRIMARY_BY_K = "primary x k"
NO_PRIMARY = "no primary teacher"


@dataclass(frozen=True)
class Interaction:
    """The moment estimate of one interaction with k: ``variance`` (>= 0; NaN when the design
    cannot estimate it, ``reason`` says why), the degrees of freedom of the mean square it rests on,
    ``ratio`` = that mean square over what it would be without the interaction, and the F test's
    ``p`` (``raw``: the estimate before the cut at 0; ``variance_df``: its Satterthwaite df, what a
    contrast's df counts for it); ``noise`` / ``noise_df``: the variance the test compares against
    (per run for seed x k, per cell mean for primary x k) and its df; ``extra``: other components
    the estimation meets on the way (the seed's own effect and teacher x seed; the primary's own
    effect), by name, for the report's variance-components table; ``note``: a caveat of the
    test in words ("" when none)."""

    name: str
    variance: float
    df: float
    ratio: float
    p: float
    noise: float
    noise_df: float
    reason: str = ""
    extra: tuple[tuple[str, float], ...] = ()
    raw: float = float("nan")  # the moment estimate before it is cut at 0 (unbiased; negative: none seen)
    variance_df: float = 0.0
    note: str = ""

    @property
    def estimable(self) -> bool:
        return bool(np.isfinite(self.variance))


def _missing(name: str, reason: str) -> Interaction:
    nan = float("nan")
    return Interaction(name, nan, 0.0, nan, nan, nan, 0.0, reason)


def _f_sf(f: float, df1: float, df2: float) -> float:
    """P(F(df1, df2) >= f) (scipy.special, without importing scipy.stats)."""
    from scipy.special import fdtrc  # lazy: scipy only when a report computes statistics

    return float(fdtrc(df1, df2, f)) if np.isfinite(f) and df1 > 0 and df2 > 0 else float("nan")


def _centre(n: int) -> np.ndarray:
    return np.eye(n) - 1.0 / n


def _moments(q: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    """Mean and variance of x'Qx for x ~ N(0, cov): tr(QC) and 2 tr((QC)^2)."""
    qc = q @ cov
    return float(np.trace(qc)), 2.0 * float(np.einsum("ij,ji->", qc, qc))


def _test_and_estimate(
    name: str,
    ss: float,
    df: float,
    q: np.ndarray,
    null_cov: np.ndarray,
    effect_cov: np.ndarray,
    noise: float,
    noise_df: float,
    **rest,
) -> Interaction:
    """The F test and the moment estimate of an interaction whose sum of squares ``ss`` is x'Qx with
    Cov(x) = noise x ``null_cov`` + sigma^2 x ``effect_cov`` (E[ss] = null + df sigma^2): the ratio to
    what no interaction implies, its p on Satterthwaite's numerator df; sigma^2 = (ss - null) / df
    cut at 0, with the Satterthwaite df of that difference of mean squares."""
    null, null_var = _moments(q, noise * null_cov)
    ratio = ss / null if null > 0 else float("nan")
    test_df = 2 * null**2 / null_var if null_var > 0 else df
    raw = (ss - null) / df
    variance = max(0.0, raw)
    _, ss_var = _moments(q, noise * null_cov + variance * effect_cov)
    spread = (ss_var + 2 * null**2 / noise_df) / df**2 if noise_df > 0 else float("inf")
    variance_df = 2 * raw**2 / spread if variance > 0 and spread > 0 else 0.0
    return Interaction(
        name,
        variance,
        df,
        ratio,
        _f_sf(ratio, test_df, noise_df),
        noise,
        noise_df,
        raw=raw,
        variance_df=variance_df,
        **rest,
    )


def complete_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the cells (k, combination, primary) that hold every student seed of ``runs`` once,
    sorted by cell then seed. ``primary`` is -1 where the method has none."""
    keys = ["k", "combination", "primary"]
    r = runs["repeat"].nunique()
    twice = runs.duplicated([*keys, "repeat"], keep=False)
    bad = runs.loc[twice, keys].drop_duplicates()
    count = runs.groupby(keys, sort=False)["repeat"].transform("size")
    full = runs[count.to_numpy() == r]
    if len(bad):
        full = (
            full.merge(bad, on=keys, how="left", indicator=True).query('_merge == "left_only"').drop(columns="_merge")
        )
    return full.sort_values([*keys, "repeat"], kind="stable")


def _members(combination: str) -> list[int]:
    return [int(t) for t in combination.split("-")]


def _contrasts(r: int) -> np.ndarray:
    """An orthonormal basis (r x (r - 1)) of the vectors of r values summing to 0: P_r = Q Q'."""
    values, vectors = np.linalg.eigh(_centre(r))
    return vectors[:, values > 0.5]


def seed_by_k(runs: pd.DataFrame, teachers: int, full: pd.DataFrame | None = None) -> Interaction:
    """The seed x k interaction of one grid point's runs (module docstring), from its complete
    cells (``full``: ``complete_cells(runs)``, when the caller has it); NaN with one seed (each k
    then has one seed, and its interaction is confounded with k)."""
    seeds = np.sort(runs["repeat"].unique())
    r = len(seeds)
    if r < 2:
        return _missing(
            SEED_BY_K,
            "one student seed: each k has the same single seed, so its interaction with k cannot be told from k itself",
        )
    full = complete_cells(runs) if full is None else full
    blocks = [g for _, g in full.groupby("k", sort=True)]
    if len(blocks) < 2:
        return _missing(SEED_BY_K, "fewer than two k's with a complete cell")
    means, n_cells, ys, features = [], [], [], []
    has_primary = bool((full["primary"] >= 0).any())
    q = _contrasts(r)
    for g in blocks:
        a = g["score"].to_numpy(float).reshape(-1, r)  # cells x seeds (complete cells, sorted)
        means.append(a.mean(0))
        n_cells.append(a.shape[0])
        if a.shape[0] < 2:
            continue
        pn = _centre(a.shape[0])
        ys.append(pn @ a @ q)  # the within-k residuals of cells x seeds, in the seeds' contrast basis
        cell_keys = g.iloc[::r]
        u = np.zeros((a.shape[0], teachers))  # teacher membership, each member weighted 1/k
        for i, c in enumerate(cell_keys["combination"]):
            ms = _members(c)
            u[i, ms] = 1.0 / len(ms)
        if has_primary:
            p = np.zeros((a.shape[0], teachers))
            p[np.arange(a.shape[0]), cell_keys["primary"].to_numpy(int)] = 1.0
            u = np.hstack([u, p])
        features.append(pn @ u)  # teacher (and primary) x seed terms: one coefficient per feature and seed contrast
    if not ys:
        return _missing(SEED_BY_K, "no k with two complete cells to measure the run noise")
    y, x = np.vstack(ys), np.vstack(features)
    total_df = sum((n - 1) * (r - 1) for n in n_cells if n >= 2)
    beta, _, rank_x, _ = np.linalg.lstsq(x, y, rcond=None)
    rank = int(rank_x) * (r - 1)
    extra: tuple[tuple[str, float], ...] = ()
    if total_df - rank >= 2:
        fitted = x @ beta
        noise_df = float(total_df - rank)
        noise = float(((y - fitted) ** 2).sum()) / noise_df
        scale = float(np.einsum("ij,ij->", x, x)) * (r - 1)
        ts = max(0.0, (float((fitted**2).sum()) - rank * noise) / scale) if scale > 0 else 0.0
        extra = (("teacher x seed", ts),)
        note = ""
    else:  # too few runs to fit the teacher x seed terms: the plain two-way residual
        noise_df = float(total_df)
        noise = float((y**2).sum()) / noise_df
        note = "the run noise holds any teacher x seed interaction (too few runs to take it out): the test may miss one"
    z = np.vstack(means)
    big_k = z.shape[0]
    pk, pr = _centre(big_k), _centre(r)
    resid = pk @ z @ pr
    ss = float((resid**2).sum())
    df = float((big_k - 1) * (r - 1))
    # the seed's own effect: the spread of the seed means over the k's, less what the interaction puts there
    seed_means = z.mean(0)
    seed = max(0.0, float(((seed_means - seed_means.mean()) ** 2).sum()) / (r - 1) - ss / df / big_k)
    # ss = vec(z)' (P_K x P_r) vec(z), vec(z) with Cov = diag(noise / n_k + sigma^2) x I_r
    q = np.kron(pk, pr)
    per_run = np.kron(np.diag(1.0 / np.asarray(n_cells, float)), np.eye(r))
    return _test_and_estimate(
        SEED_BY_K, ss, df, q, per_run, np.eye(big_k * r), noise, noise_df, extra=(("seed", seed), *extra), note=note
    )


def primary_by_k(runs: pd.DataFrame, teachers: int, full: pd.DataFrame | None = None) -> Interaction:
    """The primary x k interaction of one grid point's runs (module docstring), from the means of
    its complete cells at every k >= 2 (``full``: ``complete_cells(runs)``, when the caller has it);
    NaN without a primary or with fewer than two such k's."""
    full = complete_cells(runs) if full is None else full
    if not bool((full["primary"] >= 0).any()):
        return _missing(PRIMARY_BY_K, NO_PRIMARY)
    cell = full.groupby(["k", "combination", "primary"], sort=True)["score"].mean().reset_index()
    effects, covs, rss, rdf = [], [], 0.0, 0.0
    pn = _centre(teachers)
    for _, g in cell[cell["k"] >= 2].groupby("k", sort=True):
        combos = sorted(g["combination"].unique())
        d = np.zeros((len(g), len(combos) + teachers))
        d[np.arange(len(g)), [combos.index(c) for c in g["combination"]]] = 1.0
        d[np.arange(len(g)), len(combos) + g["primary"].to_numpy(int)] = 1.0
        pinv = np.linalg.pinv(d)
        contrasts = np.hstack([np.zeros((teachers, len(combos))), pn])  # the centred primary effects
        if np.abs(contrasts - contrasts @ pinv @ d).max() > 1e-8:
            continue  # a primary's effect at this k is not estimable apart from its combinations'
        y = g["score"].to_numpy(float)
        fitted = d @ (pinv @ y)
        rank = int(np.linalg.matrix_rank(d))
        rss += float(((y - fitted) ** 2).sum())
        rdf += len(y) - rank
        effects.append(pn @ (pinv @ y)[len(combos) :])
        covs.append(pn @ (pinv @ pinv.T)[len(combos) :, len(combos) :] @ pn)
    if len(effects) < 2:
        return _missing(PRIMARY_BY_K, "fewer than two k >= 2 where every primary's effect is estimable")
    if rdf < 1:
        return _missing(PRIMARY_BY_K, "no residual degrees of freedom between the cells of a combination")
    noise = rss / rdf
    phi = np.column_stack(effects)  # primaries x k's (>= 2), centred over the primaries
    kk = phi.shape[1]
    pk = _centre(kk)
    ss = float(((phi @ pk) ** 2).sum())
    df = float((teachers - 1) * (kk - 1))
    # ss = x' (P_K' x I_N) x, x the k-major stack of the centred effects, Cov = blockdiag(noise Cov_k + sigma^2 P_N)
    q = np.kron(pk, np.eye(teachers))
    null_cov = np.zeros((kk * teachers, kk * teachers))
    for i, c in enumerate(covs):
        null_cov[i * teachers : (i + 1) * teachers, i * teachers : (i + 1) * teachers] = c
    out = _test_and_estimate(PRIMARY_BY_K, ss, df, q, null_cov, np.kron(np.eye(kk), pn), noise, float(rdf))
    # the primaries' own effect: their mean over the k's, less what noise and the interaction put there
    main = phi.mean(1)
    traces = float(np.trace(null_cov))
    own = max(0.0, (float(main @ main) - noise * traces / kk**2) / (teachers - 1) - out.variance / kk)
    return dataclasses.replace(out, extra=(("primary", own),))


def seed_exposures(weights: pd.DataFrame, per_comb: pd.DataFrame, statistics: Sequence[str]) -> dict[str, np.ndarray]:
    """Per statistic: per combination of ``per_comb`` (its rows, in order) and student seed, the
    weight the statistics of that combination's k put on that seed's run, pooled over the complete
    cells of the k (``weights``: one row per run with ``k``, ``combination``, ``primary``,
    ``repeat``, the cell's ``complete`` flag and a column per statistic, as ``stats.run_weights``
    gives). 1/r per seed for the mean; for a worst case, the chance that the seed's run is a cell's
    worst. Pooled, because a seed x k term moves the k level by that pooled weight; how one cell's
    weights differ from it varies between the cells of one k and is in the residuals already."""
    use = weights[weights["complete"].to_numpy()]
    seeds = np.sort(weights["repeat"].unique())
    cols = np.searchsorted(seeds, use["repeat"].to_numpy())
    ks = np.unique(per_comb["k"].to_numpy())
    rows = np.searchsorted(ks, use["k"].to_numpy())
    keep = np.isin(use["k"].to_numpy(), ks)
    cells_at = (
        use[keep].drop_duplicates(["k", "combination", "primary"]).groupby("k").size().reindex(ks).to_numpy(float)
    )
    at_k = np.searchsorted(ks, per_comb["k"].to_numpy())
    out = {}
    for stat in statistics:
        table = np.zeros((len(ks), len(seeds)))
        np.add.at(table, (rows[keep], cols[keep]), use[stat].to_numpy(float)[keep])
        out[stat] = (table / cells_at[:, None])[at_k]
    return out


def primary_exposure(weights: pd.DataFrame, per_comb: pd.DataFrame, teachers: int) -> np.ndarray:
    """Per combination of ``per_comb`` and teacher: the share of its complete cells whose primary is
    that teacher (a primary's interaction with k moves its cell's every statistic alike)."""
    cells = weights[weights["complete"]].drop_duplicates(["k", "combination", "primary"])
    out = np.zeros((len(per_comb), teachers))
    at = {key: i for i, key in enumerate(zip(per_comb["k"], per_comb["combination"]))}
    for (k, c), g in cells.groupby(["k", "combination"]):
        i = at.get((k, c))
        if i is None:
            continue
        primaries = g["primary"].to_numpy(int)
        primaries = primaries[primaries >= 0]
        if len(primaries):
            np.add.at(out[i], primaries, 1.0 / len(primaries))
    return out
