"""The verdict's headline contrasts, failed runs and its graphical multiple-testing procedure
(bench.analysis.robustness): cases checked by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from bench.analysis.robustness import (
    FAIL,
    FailureRule,
    Multiplicity,
    contrast_weights,
    failed_runs,
    failure_table,
    failure_trend,
    graph_weights,
    graphical,
    headline_table,
)


def _sweep(n: int, r: int, score, ks=None) -> pd.DataFrame:
    """Every combination of n teachers (k in ks), r repeats; score(k, combination, repeat)."""
    rows = []
    for k in ks or range(1, n + 1):
        for c in itertools.combinations(range(n), k):
            comb = "-".join(map(str, c))
            rows += [(k, comb, j, float(score(k, c, j))) for j in range(r)]
    df = pd.DataFrame(rows, columns=["k", "combination", "repeat", "score"])
    return df.assign(status="ok", primary=pd.array([pd.NA] * len(df), dtype="Int64"))


def test_contrast_weights_read_the_gain_they_name():
    ks, counts = [1, 2, 3, 4], [4, 6, 4, 1]
    for kind in ("trend", "pooled", "last"):
        w = contrast_weights(kind, ks, counts, 1)
        assert w.sum() == pytest.approx(0.0, abs=1e-12)  # no k effect -> 0, whatever the levels
    # a gain g at every k > 1 reads g when pooled
    assert contrast_weights("pooled", ks, counts, 1) @ [0, 1, 1, 1] == pytest.approx(1.0)
    # last: level(4) - level(1)
    assert contrast_weights("last", ks, counts, 1).tolist() == [-1, 0, 0, 1]
    # a gain exactly along 1 - 1/k reaching g at k=4 reads g
    x = 1 - 1 / np.array(ks, float)
    assert contrast_weights("trend", ks, counts, 1) @ (0.02 * x / x[-1]) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="unknown contrast"):
        contrast_weights("median", ks, counts, 1)


def test_graphical_procedure_by_hand():
    nan = float("nan")
    default = Multiplicity()  # fail 0.9, worst 0.1, mean 0, best 0 of 5%, a cyclic fallback chain
    assert default.order == ("fail", "worst", "mean", "best")
    # the failure rate at 4.5%: rejected; its share then goes to the worst case (0.05), not enough for 0.2
    assert graphical([0.03, 0.2, 0.2, 0.2], default, 0.05) == [True, False, False, False]
    # the worst case at 0.5%: rejected, passes its 0.5% to the mean; the failure rate stays at 4.5%
    assert graphical([0.046, 0.004, 0.3, 0.3], default, 0.05) == [False, True, False, False]
    assert graphical([0.046, 0.006, 0.3, 0.3], default, 0.05) == [False, False, False, False]
    # no failed run: its share passes to the worst case, tested at the full 5%
    assert graphical([nan, 0.04, 0.3, 0.3], default, 0.05) == [False, True, False, False]
    assert graph_weights(default, [False, True, True, True]) == pytest.approx([0.0, 1.0, 0.0, 0.0])
    # every rejection hands the whole error down the chain
    assert graphical([0.01, 0.04, 0.04, 0.04], default, 0.05) == [True, True, True, True]
    assert graphical([0.06, 0.001, 0.001, 0.001], default, 0.05) == [False, True, True, True]
    # two hypotheses at 2.5% each (Bonferroni, then the whole 5% to the survivor: Holm for two)
    two = Multiplicity(("fail", "worst"), (0.5, 0.5))
    assert graphical([0.03, 0.02], two, 0.05) == [True, True]
    assert graphical([0.03, 0.026], two, 0.05) == [False, False]


def test_procedure_sentence_names_the_graph():
    text = Multiplicity().sentence(0.95, ["worst_m", "best_m", "mean"])
    assert "the worst case at 0.05 first" in text and "the failure rate" not in text and "graphical procedure" in text
    assert "Bretz" in text


def test_failed_runs_one_class_threshold_and_robust_outlier():
    jobs = pd.DataFrame(
        {
            "k": 1,
            "combination": "0",
            "repeat": range(8),
            "score": [0.90, 0.91, 0.89, 0.90, 0.92, 0.91, 0.60, 0.88],
            "status": "ok",
            "constant_predictions": [False] * 7 + [True],
        }
    )
    # 0.60 is far below the median (MAD 0.01); 0.88 predicts one class
    assert failed_runs(jobs).tolist() == [False] * 6 + [True, True]
    assert failed_runs(jobs, rule=FailureRule(threshold=0.895, mad=0)).tolist() == [
        False,
        False,
        True,
        False,
        False,
        False,
        True,
        True,  # fmt: skip
    ]
    # lower is better (perplexity): a failure is far above the median
    ppl = jobs.assign(score=[20.0, 21, 19, 20, 22, 21, 60, 20], constant_predictions=None)
    assert failed_runs(ppl, higher_is_better=False).tolist() == [False] * 6 + [True, False]


def test_failure_rate_per_k_and_its_trend():
    # failures only at k=1, in every seed: the trend is the whole k=1 rate, and significant
    jobs = _sweep(6, 3, lambda k, c, j: 0.5 if (k == 1 and c[0] < 3) else 0.9)
    failed = failed_runs(jobs, rule=FailureRule(threshold=0.6, mad=0))
    table = failure_table(jobs, failed).set_index("k")
    assert table.loc[1, "failed"] == 9 and table.loc[1, "rate"] == 0.5 and table.loc[2, "failed"] == 0
    lo, hi = table.loc[1, ["rate_lo", "rate_hi"]]
    assert 0.25 < lo < 0.5 < hi < 0.75  # Wilson's interval of 9 in 18
    t = failure_trend(jobs, failed)
    assert t.estimate < 0 and t.p < 0.01 and (t.failures, t.runs) == (9, 189)
    # the same number of failures spread evenly over k: no trend (p far from 0)
    even = jobs.assign(score=np.where(np.arange(len(jobs)) % 21 == 0, 0.5, 0.9))
    assert failure_trend(even, failed_runs(even, rule=FailureRule(threshold=0.6, mad=0))).p > 0.2
    # deterministic: the same records give the same p
    assert failure_trend(jobs, failed).p == t.p


def test_headline_table_sees_a_gain_spread_over_every_k():
    rng = np.random.default_rng(3)
    noise = {}

    def score(k, c, j):
        key = (c, j)
        noise.setdefault(key, rng.normal(0, 0.004))
        return 0.9 + 0.02 * (1 - 1 / k) + noise[key]

    head = headline_table(_sweep(6, 3, score)).set_index("statistic")
    assert set(head.index) == {"worst_m", "best_m", "mean"}  # no failed run: no failure rate
    assert (head["call"] == "better").all()
    assert head.loc["mean", "gain"] == pytest.approx(0.02 * (1 - 1 / 6), abs=0.004)
    assert (head["lo"] < head["gain"]).all() and (head["gain"] < head["hi"]).all()
    # a partial design still gets a headline
    part = headline_table(_sweep(6, 3, score, ks=[1, 2, 6])).set_index("statistic")
    assert part.loc["mean", "call"] == "better"


def test_headline_table_reads_failures_and_keeps_them_out_of_worst_case():
    def score(k, c, j):
        return 0.5 if (k == 1 and j == 0 and c[0] < 3) else 0.9 + 0.001 * ((hash((c, j)) % 7) - 3)

    head = headline_table(_sweep(6, 3, score), rule=FailureRule(threshold=0.6)).set_index("statistic")
    assert head.loc[FAIL, "call"] == "better" and head.loc[FAIL, "gain"] > 0
    # without the failed runs the worst case does not move
    assert abs(head.loc["worst_m", "gain"]) < 0.01


def test_too_small_to_tell_when_nothing_is_left_to_estimate_noise():
    # N=2: three combinations, three parameters: no residual df
    head = headline_table(_sweep(2, 1, lambda k, c, j: 0.9 + 0.01 * k + 0.001 * c[0]))
    assert (head["call"] == "too small to tell").all()
