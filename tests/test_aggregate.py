"""Paper statistics on a hand-made runs table whose answers are checked by hand."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

from bench.analysis.aggregate import budget, by_combination, jobs_frame, summary_by_k
from bench.analysis.plots import plot_budget, plot_by_k


def runs() -> pd.DataFrame:
    # N=3 teachers, k=1 (combinations 0, 1) and k=2 (combination 0-1), 2 runs each,
    # one failed run that must be ignored.
    rows = [
        (1, "0", 0.50, 10.0, "a"),
        (1, "0", 0.70, 12.0, "a"),
        (1, "1", 0.60, 10.0, "b"),
        (1, "1", 0.60, 14.0, "b"),
        (2, "0-1", 0.80, 20.0, "a,b"),
        (2, "0-1", 0.90, 20.0, "a,b"),
    ]
    df = pd.DataFrame(rows, columns=["k", "combination", "score", "t_total", "teacher_keys"])
    df["status"] = "ok"
    failed = pd.DataFrame(
        [{"k": 1, "combination": "0", "score": None, "t_total": None, "teacher_keys": "a", "status": "failed"}]
    )
    return pd.concat([df, failed], ignore_index=True)


def test_by_combination_min_max_mean():
    comb = by_combination(runs())
    assert comb[["k", "combination", "min", "max", "mean", "n_runs"]].values.tolist() == [
        [1, "0", 0.5, 0.7, pytest.approx(0.6), 2],
        [1, "1", 0.6, 0.6, 0.6, 2],
        [2, "0-1", 0.8, 0.9, pytest.approx(0.85), 2],
    ]


def test_summary_by_k_averages_over_combinations_with_population_std():
    s = summary_by_k(by_combination(runs())).set_index("k")
    assert s.loc[1, "worst"] == pytest.approx(0.55)  # mean of mins 0.5 and 0.6
    assert s.loc[1, "worst_std"] == pytest.approx(0.05)  # std of (0.5, 0.6), ddof=0
    assert s.loc[1, "best"] == pytest.approx(0.65)  # mean of maxes 0.7 and 0.6
    assert s.loc[1, "best_std"] == pytest.approx(0.05)
    assert s.loc[1, "mean"] == pytest.approx(0.6)
    assert s.loc[1, "n_combinations"] == 2 and s.loc[1, "n_runs"] == 4
    assert s.loc[2, "worst"] == pytest.approx(0.8) and s.loc[2, "worst_std"] == 0.0


def test_summary_keeps_grid_points_apart():
    a, b = runs(), runs()
    a["temperature"], b["temperature"] = 1.0, 4.0
    b["score"] = b["score"] + 0.1
    s = summary_by_k(by_combination(pd.concat([a, b]), ["temperature"]), ["temperature"])
    assert len(s) == 4
    worst = s.set_index(["temperature", "k"])["worst"]
    assert worst[(4.0, 1)] - worst[(1.0, 1)] == pytest.approx(0.1)


def test_budget_charges_each_combination_its_teachers():
    b = budget(runs(), {"a": 100.0, "b": 200.0}).set_index("k")
    # k=1: combination 0 costs 100 + mean(10, 12) = 111; combination 1 costs 200 + 12 = 212
    assert b.loc[1, "compute_seconds"] == pytest.approx((111 + 212) / 2)
    assert b.loc[1, "teacher_seconds"] == pytest.approx(150)
    # k=2: both teachers + 20
    assert b.loc[2, "compute_seconds"] == pytest.approx(320)
    assert b.loc[2, "best"] == pytest.approx(0.9)


def test_budget_in_kwh_charges_the_same_way():
    jobs = runs()
    jobs["energy_kwh"] = [1.0, 3.0, 1.0, 1.0, 2.0, 2.0, None]  # the failed run has none: ignored
    b = budget(jobs, {"a": 100.0, "b": 200.0}, teacher_kwh={"a": 10.0, "b": 20.0}).set_index("k")
    # k=1: combination 0 costs 10 + mean(1, 3) = 12 kWh, combination 1 costs 20 + 1 = 21
    assert b.loc[1, "compute_kwh"] == pytest.approx((12 + 21) / 2)
    assert b.loc[2, "compute_kwh"] == pytest.approx(32) and b.loc[2, "student_kwh"] == pytest.approx(2)
    assert "compute_kwh" not in budget(runs(), {"a": 100.0, "b": 200.0}, teacher_kwh={"a": 1.0, "b": 1.0})


def test_budget_figure_has_a_kwh_axis_when_energy_grows_with_compute():
    jobs = runs()
    jobs["energy_kwh"] = [1.0, 3.0, 1.0, 1.0, 2.0, 2.0, None]
    ax = plot_budget(budget(jobs, {"a": 100.0, "b": 200.0}, teacher_kwh={"a": 10.0, "b": 20.0}))
    tops = [c for c in ax.child_axes if "kWh" in c.get_xlabel()]
    assert len(tops) == 1
    # without a monotone mapping (k=2 costs more seconds, less energy), each k's label carries its kWh
    jobs["energy_kwh"] = [100.0, 100.0, 100.0, 100.0, 0.0, 0.0, None]
    ax = plot_budget(budget(jobs, {"a": 100.0, "b": 200.0}, teacher_kwh={"a": 1.0, "b": 1.0}))
    assert not ax.child_axes and any("kWh" in t.get_text() for t in ax.texts)


def test_jobs_frame_flattens_records():
    rec = {
        "key": "x",
        "status": "ok",
        "k": 2,
        "combination": [0, 3],
        "primary": 3,
        "repeat": 1,
        "grid": {"temperature": 2.0},
        "score": 0.5,
        "metric": "accuracy",
        "attempts": 1,
        "scores": {"dev": {"accuracy": 0.5}, "test": {"accuracy": 0.4}},
        "timings": {"train": 1.0, "total": 1.5},
        "teacher_keys": ["a", "d"],
    }
    df = jobs_frame([rec], ["temperature"])
    row = df.iloc[0]
    assert row["combination"] == "0-3" and row["primary"] == 3 and row["temperature"] == 2.0
    assert row["test_accuracy"] == 0.4 and row["t_total"] == 1.5 and row["teacher_keys"] == "a,d"


def test_plots_draw_on_given_axes_and_return_them():
    import matplotlib.pyplot as plt

    summary = summary_by_k(by_combination(runs()))
    fig, ax = plt.subplots()
    assert plot_by_k(summary, metric="accuracy", ax=ax) is ax
    assert ax.get_xlabel() == "number of teachers k" and "accuracy" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 3 + (summary["n_combinations"] == 1).any()
    if (summary["n_combinations"] == 1).any():  # k = N: one combination, no band drawn, and the legend says why
        assert labels[-1] == "one combination: spread unknown"
    ax2 = plot_budget(budget(runs(), {"a": 1.0, "b": 2.0}))
    assert "seconds" in ax2.get_xlabel()
    plt.close("all")
