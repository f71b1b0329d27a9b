"""Robust statistics on inputs whose answers can be checked by hand."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from bench.records import decode_array, encode_array
from bench.stats import (charged_teacher_seconds, compare_to_base, expected_best_of_n, expected_by_budget,
                         expected_extreme, extreme_weights, iqm, robust_summary, size_matched_by_combination)


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


def test_iqm():
    # the middle half of 1..8 is 3,4,5,6
    assert iqm(range(1, 9)) == pytest.approx(4.5)
    # 4 values: the middle half is the 2nd and 3rd; an outlier does not move it
    assert iqm([1, 2, 3, 1000]) == pytest.approx(2.5)
    # weights: doubling a value is the same as repeating it
    assert iqm([1, 2, 3, 4], [2, 1, 1, 1]) == pytest.approx(iqm([1, 1, 2, 3, 4]))


def _runs(rows):
    """rows: (k, combination, repeat, score) -> the runs table shape."""
    return pd.DataFrame([{"k": k, "combination": c, "repeat": r, "score": s, "status": "ok",
                          "teacher_keys": ",".join(f"t{i}" for i in c.split("-")), "t_total": 1.0}
                         for k, c, r, s in rows])


def test_size_matched_extremes_do_not_grow_with_the_number_of_runs():
    # k=1: 2 runs per combination; k=2 with a primary: 4 runs. m = 2 for both.
    jobs = _runs([(1, "0", 0, 0.5), (1, "0", 1, 0.7), (1, "1", 0, 0.6), (1, "1", 1, 0.8),
                  (2, "0-1", 0, 0.5), (2, "0-1", 1, 0.6), (2, "0-1", 0, 0.7), (2, "0-1", 1, 0.8)])
    per = size_matched_by_combination(jobs, m=2)
    k2 = per[per["k"] == 2].iloc[0]
    # worst of 2 of {.5,.6,.7,.8}: mins of the 6 pairs: .5 x3, .6 x2, .7 -> 3.4/6; maxes: .8 x3, .7 x2, .6 -> 4.4/6
    assert k2["worst_m"] == pytest.approx(3.4 / 6) and k2["best_m"] == pytest.approx(4.4 / 6)
    k1 = per[per["k"] == 1]
    assert list(k1["worst_m"]) == pytest.approx([0.5, 0.6])  # m = runs: the plain min
    # lower is better: worst is the max
    flipped = size_matched_by_combination(jobs, m=2, higher_is_better=False)
    assert flipped[flipped["k"] == 2].iloc[0]["worst_m"] == pytest.approx(4.4 / 6)


def _sweep(effect: float, n_teachers: int = 4, repeats: int = 3, seed: int = 0):
    """Runs for k = 1 and 2 where each extra teacher adds ``effect`` to every score."""
    from itertools import combinations

    rng = np.random.default_rng(seed)
    rows = []
    for k in (1, 2):
        for c in combinations(range(n_teachers), k):
            for r in range(repeats):
                rows.append((k, "-".join(map(str, c)), r, 0.5 + effect * (k - 1) + 0.01 * rng.standard_normal()))
    return _runs(rows)


def test_bootstrap_intervals_hold_the_estimate_and_are_reproducible():
    jobs = _sweep(0.0)
    a = robust_summary(jobs, n_boot=300, seed=1)
    b = robust_summary(jobs, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a, b)  # a fixed seed gives the same report
    for s in ("mean", "worst_m", "best_m", "iqm"):
        assert (a[f"{s}_lo"] <= a[s] + 1e-12).all() and (a[s] <= a[f"{s}_hi"] + 1e-12).all()
    assert list(a["n_combinations"]) == [4, 6] and list(a["m"]) == [3, 3]


def test_a_real_gain_is_detected_and_no_gain_is_not():
    gain = compare_to_base(_sweep(0.05), n_boot=300).iloc[0]
    assert gain["diff"] == pytest.approx(0.05, abs=0.01)
    assert gain["diff_lo"] > 0 and gain["p_mwu"] < 0.05 and gain["p_improve"] == 1.0
    none = compare_to_base(_sweep(0.0), n_boot=300).iloc[0]
    assert none["diff_lo"] < 0 < none["diff_hi"]
    # probability of improvement by hand: k=2 combos {0.6, 0.7} vs base {0.6}: (0.5 + 1) / 2
    jobs = _runs([(1, "0", 0, 0.6), (2, "0-1", 0, 0.6), (2, "0-2", 0, 0.7), (1, "1", 0, 0.6), (1, "2", 0, 0.6)])
    row = compare_to_base(jobs, m=1, n_boot=50).iloc[0]
    assert row["p_improve"] == pytest.approx(float(Fraction(3, 4)))


def test_teacher_cost_policies():
    jobs = _runs([(1, "0", 0, 0.5), (1, "1", 0, 0.5), (2, "0-1", 0, 0.5)])
    seconds = {"t0": 10.0, "t1": 20.0}
    assert charged_teacher_seconds(jobs, seconds, "full") == seconds
    assert charged_teacher_seconds(jobs, seconds, "free") == {"t0": 0.0, "t1": 0.0}
    assert charged_teacher_seconds(jobs, seconds, "amortised") == {"t0": 5.0, "t1": 10.0}  # 2 runs use each
    table = expected_by_budget(jobs, seconds, policy="amortised", max_n=2)
    k2 = table[(table["k"] == 2) & (table["n"] == 2)].iloc[0]
    assert k2["compute_seconds"] == pytest.approx(2 * (1.0 + 15.0)) and k2["policy"] == "amortised"
    with pytest.raises(ValueError, match="unknown teacher cost policy"):
        charged_teacher_seconds(jobs, seconds, "cheap")


def test_predictions_round_trip():
    for a in (np.array([0, 1, 1, 0, 9]), np.arange(1000) % 300, np.array([], dtype=int)):
        enc = encode_array(a)
        assert np.array_equal(decode_array(enc), a)
    assert len(encode_array(np.zeros(1043, dtype=int))["zlib_base64"]) < 100
