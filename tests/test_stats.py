"""Robust statistics on inputs whose answers can be checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.analysis.stats import (
    call,
    charged_teacher_seconds,
    degenerate_notes,
    expected_best_of_n,
    expected_by_budget,
    expected_extreme,
    extreme_weights,
    fit_k_model,
    iqm,
    minimum_detectable,
    robust_tables,
    single_teacher_by_combination,
    size_matched_by_combination,
)
from bench.core.records import decode_array, encode_array


def test_expected_extremes_without_replacement():
    # pairs of {1,2,3}: (1,2) (1,3) (2,3) -> max 2,3,3 -> 8/3; min 1,1,2 -> 4/3
    assert expected_extreme([3, 1, 2], 2, "max") == pytest.approx(8 / 3)
    assert expected_extreme([3, 1, 2], 2, "min") == pytest.approx(4 / 3)
    # m = n: the plain min and max; m = 1: the mean
    assert expected_extreme([5, 1, 4, 2], 4, "min") == 1 and expected_extreme([5, 1, 4, 2], 4, "max") == 5
    assert expected_extreme([5, 1, 4, 2], 1, "max") == pytest.approx(3.0)
    # the weights are a distribution: C(n-i, m-1)/C(n, m) sums to 1
    assert extreme_weights(6, 3, "min").sum() == pytest.approx(1.0)
    assert list(extreme_weights(4, 2, "max")) == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])
    with pytest.raises(ValueError):
        expected_extreme([1, 2], 3, "min")


def test_expected_best_of_n_with_replacement():
    # Dodge et al.: max of 2 draws with replacement from {1,2}: P(max=1) = 1/4 -> 1/4 + 2*3/4 = 7/4
    assert expected_best_of_n([2, 1], 2) == pytest.approx(7 / 4)
    assert expected_best_of_n([2, 1], 2, "min") == pytest.approx(5 / 4)
    assert expected_best_of_n([1, 2, 3], 1) == pytest.approx(2.0)


def test_iqm_is_rliables():
    # rliable: scipy's trim_mean(x, 0.25), whole runs cut from each end; the middle half of 1..8 is 3..6
    assert iqm(range(1, 9)) == pytest.approx(4.5)
    assert iqm([1, 2, 3, 1000]) == pytest.approx(2.5)  # an outlier does not move it
    # 6 runs: int(0.25 * 6) = 1 cut from each end (a fractional trim would weigh 2 and 5 by half)
    assert iqm([1, 2, 3, 4, 5, 100]) == pytest.approx(3.5)


def _runs(rows):
    """rows: (k, combination, repeat, score) -> the runs table shape."""
    return pd.DataFrame(
        [
            {
                "k": k,
                "combination": c,
                "repeat": r,
                "score": s,
                "status": "ok",
                "teacher_keys": ",".join(f"t{i}" for i in c.split("-")),
                "t_total": 1.0,
            }
            for k, c, r, s in rows
        ]
    )


def test_size_matched_extremes_do_not_grow_with_the_number_of_runs():
    # k=1: 2 runs per combination; k=2 with a primary: 4 runs. m = 2 for both.
    jobs = _runs(
        [
            (1, "0", 0, 0.5),
            (1, "0", 1, 0.7),
            (1, "1", 0, 0.6),
            (1, "1", 1, 0.8),
            (2, "0-1", 0, 0.5),
            (2, "0-1", 1, 0.6),
            (2, "0-1", 0, 0.7),
            (2, "0-1", 1, 0.8),
        ]
    )
    per = size_matched_by_combination(jobs, m=2)
    k2 = per[per["k"] == 2].iloc[0]
    # worst of 2 of {.5,.6,.7,.8}: mins of the 6 pairs: .5 x3, .6 x2, .7 -> 3.4/6; maxes: .8 x3, .7 x2, .6 -> 4.4/6
    assert k2["worst_m"] == pytest.approx(3.4 / 6) and k2["best_m"] == pytest.approx(4.4 / 6)
    k1 = per[per["k"] == 1]
    assert list(k1["worst_m"]) == pytest.approx([0.5, 0.6])  # m = runs: the plain min
    # lower is better: worst is the max
    flipped = size_matched_by_combination(jobs, m=2, higher_is_better=False)
    assert flipped[flipped["k"] == 2].iloc[0]["worst_m"] == pytest.approx(4.4 / 6)


def _full(values: dict[str, float], repeats: int = 1, primary: bool = False) -> pd.DataFrame:
    """A runs table from {combination: score} (every repeat the same score unless varied)."""
    rows = []
    for c, v in values.items():
        members = [int(t) for t in c.split("-")]
        for p in members if primary else [None]:
            rows += [
                {
                    "k": len(members),
                    "combination": c,
                    "primary": p,
                    "repeat": r,
                    "score": v,
                    "status": "ok",
                    "teacher_keys": ",".join(f"t{i}" for i in members),
                    "t_total": 1.0,
                }
                for r in range(repeats)
            ]
    df = pd.DataFrame(rows)
    df["primary"] = df["primary"].astype("Int64")
    return df


def test_the_k_contrast_by_hand():
    # N=3, one run per combination; scores = k level + mean of members' teacher effects + residual.
    # Teacher effects (0, 0.03, 0.06) cancel from the contrast; the residual spread is what it must beat.
    t = np.array([0.0, 0.03, 0.06])
    level = {1: 0.50, 2: 0.52, 3: 0.55}
    # residuals larger at k=2 than at k=1: the variance function's b / k term fits below 0, so one
    # variance serves every k (the ordinary least-squares case, checked by hand below)
    resid = {"0": 0.0, "1": 0.0, "2": 0.0, "0-1": 0.01, "0-2": -0.01, "1-2": 0.0, "0-1-2": 0.0}
    values = {c: level[len(c.split("-"))] + t[[int(i) for i in c.split("-")]].mean() + e for c, e in resid.items()}
    summary, comparison = robust_tables(_full(values))
    row = comparison[comparison["k"] == 3].iloc[0]
    # in a full design the contrast is the plain difference of the per-k means (teacher means cancel)
    means = {k: np.mean([v for c, v in values.items() if len(c.split("-")) == k]) for k in (1, 2, 3)}
    assert row["gain_worst_m"] == pytest.approx(means[3] - means[1])
    # by hand: OLS of 7 combinations on 3 k levels + 2 teacher effects -> 2 residual df, and the
    # variance of level(3) - level(1) is sigma^2 x [L (X'X)^-1 L'] from the design
    x = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 0, 0, 1, 0],
            [1, 0, 0, 0, 1],
            [0, 1, 0, 0.5, 0],
            [0, 1, 0, 0, 0.5],
            [0, 1, 0, 0.5, 0.5],
            [0, 0, 1, 1 / 3, 1 / 3],
        ]
    )
    y = np.array([values[c] for c in ("0", "1", "2", "0-1", "0-2", "1-2", "0-1-2")])
    beta, rss, *_ = np.linalg.lstsq(x, y, rcond=None)
    vec = np.array([-1, 0, 1, 0, 0])
    se = np.sqrt(rss[0] / 2 * vec @ np.linalg.inv(x.T @ x) @ vec)
    per = size_matched_by_combination(_full(values))
    assert len(fit_k_model(per, "worst_m").groups) == 1  # too few residuals for a variance per k
    assert row["df"] == pytest.approx(2) and row["se_worst_m"] == pytest.approx(se)
    from scipy.stats import t as student

    assert row["gain_worst_m_lo"] == pytest.approx(vec @ beta - student.ppf(0.975, 2) * se)
    assert row["p_worst_m"] == pytest.approx(2 * student.sf(abs(vec @ beta) / se, 2))
    # the per-k table carries the same contrast in the metric's own direction
    assert summary.set_index("k").loc[3, "d_worst_m"] == pytest.approx(means[3] - means[1])


def test_t_quantiles_and_iqm_are_scipy_stats_bit_for_bit():
    """The report computes these without importing scipy.stats (seconds of its time); the values
    must be the very floats scipy.stats gives, so reports stay byte-identical."""
    from scipy.stats import t as student
    from scipy.stats import trim_mean

    from bench.analysis.stats import _t_ppf, _t_sf

    rng = np.random.default_rng(7)
    for df in (0.5, 1.0, 2.0, 3.7, 57.0, 1e6):
        for q in (0.5, 0.8, 0.975, 0.995):
            assert _t_ppf(q, df) == float(student.ppf(q, df))
        for x in (0.0, 0.3, 2.1, 50.0):
            assert _t_sf(x, df) == float(student.sf(x, df))
    for n in (1, 2, 3, 4, 5, 7, 8, 63, 189):
        a = np.round(rng.normal(0.9, 0.05, size=n), 4)  # ties, like accuracies of a small split
        assert iqm(a) == float(trim_mean(a, 0.25))
    assert np.isnan(iqm([])) and np.isnan(iqm([1.0, np.nan, 2.0, 3.0]))


def test_residual_variance_per_group_of_ks_is_unbiased_and_never_negative():
    from itertools import combinations

    from bench.analysis.stats import _design, _variance_function, variance_groups

    k = np.array([1, 1, 1, 2, 2, 2, 3])
    # with M = I each k with >= 2 df is its own group; the lone k=3 joins k=2
    basis, w, theta, groups = _variance_function(np.array([1, 1, 1, 4, 4, 4, 4.0]), np.eye(7), k, np.ones(7), df=7)
    assert groups == ((1,), (2, 3)) and theta.tolist() == pytest.approx([1.0, 4.0])
    assert (w >= 0).all()
    # a real design (N=4: 15 combinations, 4 levels + 3 teachers): fed its expectation
    # E[r^2] = (M o M) sigma^2, it returns sigma^2 exactly when sigma^2 is one value, and within
    # 12% when the groups differ 4-fold (what leaks between groups through M)
    combos = pd.DataFrame(
        {"combination": ["-".join(map(str, c)) for kk in range(1, 5) for c in combinations(range(4), kk)]}
    )
    combos["k"] = combos["combination"].str.count("-") + 1
    x, _ = _design(combos, teacher_effects=True)
    m = np.eye(15) - x @ np.linalg.inv(x.T @ x) @ x.T
    kk = combos["k"].to_numpy()
    groups = variance_groups(kk, np.diag(m))
    assert groups == ((1, 2), (3, 4))  # k=1 keeps 1.1 df after the teacher effects; k=4 none
    _, w, theta, _ = _variance_function((m * m) @ np.full(15, 0.7), m, kk, np.ones(15), df=8)
    assert theta.tolist() == pytest.approx([0.7, 0.7])
    sigma2 = np.where(np.isin(kk, groups[0]), 0.5, 2.0)
    _, w, theta, _ = _variance_function((m * m) @ sigma2, m, kk, np.ones(15), df=8)
    assert theta.tolist() == pytest.approx([0.5, 2.0], rel=0.12)
    assert (w >= 0).all() and np.diag(m)[-1] == pytest.approx(0.0, abs=1e-12)  # k=4: fitted exactly, r = 0
    # with a primary a combination averages k cells: sigma^2 = a + b / k. k=1 (nearly no residual
    # df of its own) shares k=2's group; one level for both puts k=1 near the group's mean (0.6
    # of its 1.0 here); the cell shape follows a + b / k within the group
    share = 1.0 / kk
    sigma2 = 0.2 + 0.8 * share
    basis, w, theta, _ = _variance_function((m * m) @ sigma2, m, kk, share, df=8)
    assert (basis @ theta)[kk <= 2] == pytest.approx(sigma2[kk <= 2], rel=0.05)
    _, _, flat, _ = _variance_function((m * m) @ sigma2, m, kk, np.ones(15), df=8)
    assert flat[0] < 0.8 * sigma2[kk == 1][0]  # what one level per group gives k=1
    assert (w >= 0).all()


def test_lower_is_better_turns_the_gain_not_the_estimate():
    values = {"0": 100.0, "1": 102.0, "2": 101.0, "0-1": 99.0, "0-2": 99.5, "1-2": 100.5, "0-1-2": 98.0}
    summary, comparison = robust_tables(_full(values), higher_is_better=False)
    row = comparison[comparison["k"] == 3].iloc[0]
    assert summary.set_index("k").loc[3, "d_worst_m"] == pytest.approx(98.0 - 101.0)  # perplexity fell by 3
    assert row["gain_worst_m"] == pytest.approx(3.0)  # ... which is a gain of 3
    assert row["gain_worst_m_lo"] <= row["gain_worst_m"] <= row["gain_worst_m_hi"]


def test_a_design_too_small_gives_no_interval_and_says_so():
    # N=2: 3 combinations, 2 k levels + 1 teacher effect: no residual degrees of freedom
    _, comparison = robust_tables(_full({"0": 0.5, "1": 0.6, "0-1": 0.7}))
    row = comparison.iloc[0]
    assert row["gain_worst_m"] == pytest.approx(0.7 - 0.55)
    assert np.isnan(row["gain_worst_m_lo"]) and call(row) == "untestable"


def test_worst_case_is_taken_within_a_primary_never_across():
    # k=2 with a primary: two cells of 2 runs; each cell's worst of m=2 is its min
    jobs = _runs([(1, "0", 0, 0.5), (1, "0", 1, 0.7), (1, "1", 0, 0.6), (1, "1", 1, 0.8)])
    jobs["primary"] = pd.array([0, 0, 1, 1], dtype="Int64")
    k2 = _runs([(2, "0-1", 0, 0.5), (2, "0-1", 1, 0.6), (2, "0-1", 0, 0.7), (2, "0-1", 1, 0.8)])
    k2["primary"] = pd.array([0, 0, 1, 1], dtype="Int64")
    per = size_matched_by_combination(pd.concat([jobs, k2]), m=2)
    # cells {.5,.6} and {.7,.8}: worst (.5 + .7) / 2, not the pooled worst of 2 of 4 (3.4 / 6)
    assert per[per["k"] == 2].iloc[0]["worst_m"] == pytest.approx(0.6)
    assert per[per["k"] == 2].iloc[0]["n_cells"] == 2


def test_single_teacher_pooled_and_size_matched():
    values = {"0": 0.50, "1": 0.60, "0-1": 0.58}
    jobs = _full(values, repeats=2)
    jobs.loc[(jobs["combination"] == "0") & (jobs["repeat"] == 1), "score"] = 0.54
    single = single_teacher_by_combination(jobs).set_index("combination")
    # the paper: min / max over the k=1 runs of 0 and 1 pooled: {.50, .54, .60, .60}
    assert single.loc["0-1", "single_worst"] == pytest.approx(0.50)
    assert single.loc["0-1", "single_best"] == pytest.approx(0.60) and single.loc["0-1", "n_pooled"] == 4
    # size-matched: mean over members of each one's worst of m=2: (.50 + .60) / 2
    assert single.loc["0-1", "single_worst_m"] == pytest.approx(0.55)


def test_degenerate_results_are_named():
    flat = _full({"0": 0.0, "1": 0.0, "0-1": 0.0})
    assert any("same score" in n for n in degenerate_notes(flat))
    const = _full({"0": 0.5, "1": 0.6, "0-1": 0.7}).assign(constant_predictions=[True, False, False])
    assert any("1 of 3 runs predict the same class" in n for n in degenerate_notes(const))
    stuck = _full({"0": 0.5, "1": 0.6, "0-1": 0.7}).assign(lambada_accuracy=0.0)
    assert any("`lambada_accuracy` is 0" in n for n in degenerate_notes(stuck))
    assert degenerate_notes(_full({"0": 0.5, "1": 0.6, "0-1": 0.7})) == []


def test_minimum_detectable_effect():
    from scipy.stats import norm

    # with many df the t quantiles are the normal ones: (1.96 + 0.84) x se
    assert minimum_detectable(1.0, 10_000) == pytest.approx(norm.ppf(0.975) + norm.ppf(0.8), rel=1e-3)
    assert np.isnan(minimum_detectable(1.0, 0))


def test_teacher_cost_policies():
    jobs = _runs([(1, "0", 0, 0.5), (1, "1", 0, 0.5), (2, "0-1", 0, 0.5)])
    seconds = {"t0": 10.0, "t1": 20.0}
    assert charged_teacher_seconds(jobs, seconds, "full") == seconds
    assert charged_teacher_seconds(jobs, seconds, "free") == {"t0": 0.0, "t1": 0.0}
    assert charged_teacher_seconds(jobs, seconds, "amortised") == {"t0": 5.0, "t1": 10.0}  # 2 runs use each
    table = expected_by_budget(jobs, seconds, policy="amortised")
    k1 = table[(table["k"] == 1) & (table["n"] == 2)].iloc[0]
    assert k1["compute_seconds"] == pytest.approx(2 * (1.0 + 7.5)) and k1["policy"] == "amortised"
    assert table.groupby("k")["n"].max().to_dict() == {1: 2, 2: 1}  # n stops at the runs at k: no extrapolation
    with pytest.raises(ValueError, match="unknown teacher cost policy"):
        charged_teacher_seconds(jobs, seconds, "cheap")


def test_predictions_round_trip():
    for a in (np.array([0, 1, 1, 0, 9]), np.arange(1000) % 300, np.array([], dtype=int)):
        enc = encode_array(a)
        assert np.array_equal(decode_array(enc), a)
    assert len(encode_array(np.zeros(1043, dtype=int))["zlib_base64"]) < 100
