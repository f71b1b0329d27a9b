"""Factors crossed with k (bench.analysis.interactions), their place in every contrast's variance
(bench.analysis.stats), the variance components and the model's checks (bench.analysis.components):
cases checked by hand, and seeded simulations of the moment estimators' means."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest

from bench.analysis.components import model_checks, variance_components
from bench.analysis.interactions import PRIMARY_BY_K, SEED_BY_K, primary_by_k, seed_by_k, seed_exposures
from bench.analysis.robustness import contrast_weights, headline_vector
from bench.analysis.stats import point_model, run_weights


def _runs(n: int, r: int, score, primary: bool = False) -> pd.DataFrame:
    """Every combination of n teachers, each member as primary when ``primary``, r repeats;
    score(k, combination, primary, repeat) (primary -1 without one)."""
    rows = []
    for k in range(1, n + 1):
        for c in itertools.combinations(range(n), k):
            for p in c if primary else (-1,):
                rows += [(k, "-".join(map(str, c)), p, j, float(score(k, c, p, j))) for j in range(r)]
    return pd.DataFrame(rows, columns=["k", "combination", "primary", "repeat", "score"]).assign(status="ok")


def test_seed_by_k_by_hand():
    # no noise; seed 0 is d better and seed 1 d worse at k=2 only: the k x seed table's interaction is
    # [[-d/3, d/3], [2d/3, -2d/3], [-d/3, d/3]], SS = 4 d^2 / 3 on (3 - 1)(2 - 1) = 2 df
    d = 0.01
    runs = _runs(3, 2, lambda k, c, p, j: 0.9 + 0.01 * sum(c) / k + 0.003 * j + (d if j == 0 else -d) * (k == 2))
    i = seed_by_k(runs, 3)
    assert i.df == 2
    assert i.variance == pytest.approx(2 * d * d / 3)
    assert i.noise == pytest.approx(0.0, abs=1e-15)


def test_seed_by_k_needs_two_seeds():
    i = seed_by_k(_runs(3, 1, lambda k, c, p, j: 0.9 + 0.01 * k), 3)
    assert not i.estimable and "one student seed" in i.reason


def _simulate(rng, n, r, sd_sk=0.0, sd_ts=0.0, sd_pk=0.0, primary=False):
    t, s = rng.normal(0, 1, n), rng.normal(0, 1, r)
    sk = rng.normal(0, sd_sk, (n + 1, r))  # seed j at k
    ts = rng.normal(0, sd_ts, (n, r))  # teacher i with seed j, each member weighted 1/k
    pk = rng.normal(0, sd_pk, (n, n + 1))  # primary p at k
    g = {c: rng.normal(0, 0.5) for k in range(1, n + 1) for c in itertools.combinations(range(n), k)}
    h = {}

    def score(k, c, p, j):
        cell = h.setdefault((c, p), rng.normal(0, 0.3))
        return t[list(c)].mean() + g[c] + cell + s[j] + sk[k, j] + ts[list(c), j].mean() + (pk[p, k] if p >= 0 else 0)

    runs = _runs(n, r, lambda k, c, p, j: score(k, c, p, j) + rng.normal(0, 1), primary)
    return runs


def test_seed_by_k_estimate_is_unbiased_and_teacher_by_seed_cancels():
    """Without a seed x k interaction its mean square is what the run noise implies (ratio ~ 1),
    though a teacher x seed interaction inflates the plain within-k residuals; with one of sd 0.5
    the moment estimate averages 0.25 (seeded: the same draws every run)."""
    rng = np.random.default_rng(5)
    null = [seed_by_k(_simulate(rng, 4, 3, sd_ts=1.0), 4) for _ in range(150)]
    assert np.mean([i.ratio for i in null]) == pytest.approx(1.0, abs=0.12)
    assert np.mean([i.p < 0.05 for i in null]) < 0.1
    assert np.mean([dict(i.extra)["teacher x seed"] for i in null]) == pytest.approx(1.0, rel=0.3)
    effect = [seed_by_k(_simulate(rng, 4, 3, sd_sk=0.5), 4) for _ in range(150)]
    assert np.mean([i.raw for i in effect]) == pytest.approx(0.25, rel=0.2)


def test_primary_by_k_estimate_is_unbiased():
    rng = np.random.default_rng(6)
    null = [primary_by_k(_simulate(rng, 4, 2, primary=True), 4) for _ in range(120)]
    # unbiased under the null (the ratio is F on 6 and 8 df: its mean is 8/6, not 1)
    assert np.mean([i.raw for i in null]) == pytest.approx(0.0, abs=0.04)
    assert np.median([i.ratio for i in null]) == pytest.approx(1.0, abs=0.2)
    effect = [primary_by_k(_simulate(rng, 4, 2, sd_pk=0.6, primary=True), 4) for _ in range(120)]
    assert np.mean([i.raw for i in effect]) == pytest.approx(0.36, rel=0.25)
    assert not primary_by_k(_simulate(rng, 4, 2), 4).estimable  # no primary


def test_crossed_terms_enter_a_contrast_as_sum_of_squared_level_weights():
    """In a full design a contrast with weights w on the k levels puts w_k / n_k on each combination
    at k, so a seed x k interaction adds sigma^2 sum_k w_k^2 / r to the variance of the mean, and a
    primary x k interaction sigma^2 sum_k w_k^2 / N (each k level averages the N primaries alike)."""
    rng = np.random.default_rng(7)
    runs = _simulate(rng, 4, 3, sd_sk=0.5, sd_pk=0.5, primary=True)
    model = point_model(runs, 3)
    fit = model.fits["mean"]
    vec = headline_vector(fit, "trend", 1)
    w = contrast_weights("trend", fit.ks, fit.counts, 1)
    g = vec @ fit.proj
    terms = {c.interaction.name: c for c in fit.crossed}
    assert set(terms) == {SEED_BY_K, PRIMARY_BY_K}
    assert terms[SEED_BY_K].coefficient(g, fit.row_k) == pytest.approx(float(w @ w) / 3)
    assert terms[PRIMARY_BY_K].coefficient(g, fit.row_k) == pytest.approx(float(w @ w) / 4)
    # the seed's exposure is pooled within each k, so it leaves no spread in the residuals; the
    # primary's is not, and the part of it the residual variance holds is counted once
    assert np.allclose(terms[SEED_BY_K].in_resid, 0.0, atol=1e-12)
    assert (terms[PRIMARY_BY_K].in_resid > 0).any()
    residual_only = dataclasses.replace(fit, crossed=())
    total, df = fit.variance(vec)
    alone, df_alone = residual_only.variance(vec)
    in_resid = (g**2 @ fit.basis) @ np.array([t.in_resid for t in terms.values()]).T
    added = sum(
        t.interaction.variance * max(0.0, t.coefficient(g, fit.row_k) - held)
        for t, held in zip(terms.values(), in_resid)
    )
    assert total == pytest.approx(alone + added)
    dfs = [df_alone, *(max(t.interaction.variance_df, 1.0) for t in terms.values())]
    assert min(dfs) - 1e-9 <= df <= sum(dfs) + 1e-9  # Satterthwaite's df of a sum of independent parts


def test_worst_case_exposure_follows_the_worst_seed():
    """A seed that is always the worst carries the whole worst case (m = r): its exposure is 1."""
    runs = _runs(3, 3, lambda k, c, p, j: 0.9 + 0.01 * j + 0.001 * sum(c))
    w = run_weights(runs, 3)
    model = point_model(runs, 3)
    exposure = seed_exposures(w, model.per_comb, ("worst_m", "best_m", "mean"))
    assert np.allclose(exposure["worst_m"][:, 0], 1.0) and np.allclose(exposure["worst_m"][:, 1:], 0.0)
    assert np.allclose(exposure["best_m"][:, 2], 1.0)
    assert np.allclose(exposure["mean"], 1 / 3)


def test_variance_components_recover_the_simulated_ones():
    """Means over seeded simulated sweeps (N=4, r=4, with a primary) of each moment estimate, against
    the variances drawn: teacher 1, combination 0.25, cell 0.09, seed 1, seed x k 0.25, primary x k
    0.25, run 1 (the primary's own effect is 0 here: it is in the teacher's). Estimates cut at 0 lie
    above their truth on average where they rest on few df (the cell's: 8 here)."""
    rng = np.random.default_rng(8)
    tables = [
        variance_components(point_model(_simulate(rng, 4, 4, sd_sk=0.5, sd_pk=0.5, primary=True), 4)) for _ in range(30)
    ]
    mean = pd.concat(tables).groupby("component")["variance"].mean()
    assert mean["run"] == pytest.approx(1.0, rel=0.1)
    assert mean[SEED_BY_K] == pytest.approx(0.25, rel=0.35)
    assert mean[PRIMARY_BY_K] == pytest.approx(0.25, rel=0.35)
    assert mean["cell"] == pytest.approx(0.09, abs=0.08)
    assert mean["combination"] == pytest.approx(0.25, rel=0.4)
    assert mean["teacher"] == pytest.approx(1.0, rel=0.6)  # 4 teachers: a rough estimate
    shares = tables[0]["share"]
    assert shares.sum() == pytest.approx(1.0)


def test_model_checks_say_what_r_1_cannot_include():
    runs = _runs(4, 1, lambda k, c, p, j: 0.9 + 0.001 * sum(c) + 0.0005 * (k % 2) + 0.0001 * len(c) ** 2)
    model = point_model(runs, 1)
    checks = model_checks(model, headline_vector(model.fits["worst_m"], "trend", 1))
    row = checks.set_index("assumption").loc[f"no {SEED_BY_K} interaction beyond the one modelled"]
    assert "cannot include it" in row["action"] and np.isnan(row["p"])
    assert f"no {PRIMARY_BY_K} interaction beyond the one modelled" not in set(checks["assumption"])
    assert "normal residual tails" in set(checks["assumption"])


def test_contrast_variance_with_interactions_matches_the_spread_of_its_estimates():
    """Over seeded simulated sweeps (N=4, r=2, a primary; seed x k and primary x k of sd 0.5 beside
    a run noise of 1): the mean estimated variance of the headline worst- and mean-case contrasts
    is within 25% of the variance of the estimates themselves (the interactions counted once)."""
    rng = np.random.default_rng(9)
    estimates, variances = {"mean": [], "worst_m": []}, {"mean": [], "worst_m": []}
    for _ in range(120):
        model = point_model(_simulate(rng, 4, 2, sd_sk=0.5, sd_pk=0.5, primary=True), 2)
        for stat in estimates:
            fit = model.fits[stat]
            vec = headline_vector(fit, "trend", 1)
            estimates[stat].append(float(vec @ fit.coef))
            variances[stat].append(fit.variance(vec)[0])
    for stat in estimates:
        assert np.mean(variances[stat]) == pytest.approx(np.var(estimates[stat]), rel=0.25), stat
