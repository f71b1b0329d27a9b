"""Figures: worst / best / mean case against k or against compute, with +-1 std bands.

Each function draws on ``ax`` (a new figure when None) and returns the Axes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

STYLE = {"worst": ("tab:red", "worst case (min over runs)"),
         "best": ("tab:green", "best case (max over runs)"),
         "mean": ("tab:blue", "mean over runs")}


def _axes(ax: Any) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 4))
    return ax


def _bands(table: pd.DataFrame, x: str, ax: Any, xlabel: str, metric: str, title: str) -> Any:
    """Worst / best / mean lines with +-1 std bands against column ``x``, labelled."""
    table = table.sort_values(x)
    for stat, (color, label) in STYLE.items():
        y, s = table[stat], table[f"{stat}_std"].fillna(0.0)
        ax.plot(table[x], y, marker="o", color=color, label=label)
        ax.fill_between(table[x], y - s, y + s, color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"student {metric} (mean over combinations, ±1 std)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_by_k(summary: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """Worst / best / mean case per k (the paper's Figures 2, 3, 6) from a ``summary_by_k`` table
    restricted to one grid point."""
    ax = _bands(summary, "k", _axes(ax), "number of teachers k", metric,
                title or "Worst / best case vs number of teachers")
    ax.set_xticks(sorted(summary["k"].unique()))
    return ax


def plot_budget(budget: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """Worst / best / mean case against the compute one student costs (teachers included; the
    paper's Figures 4, 5, 7) from a ``budget`` table restricted to one grid point; its ``policy``
    column, when present, names what the student is charged for its teachers."""
    ax = _bands(budget, "compute_seconds", _axes(ax),
                "compute per student, seconds (its k teachers' charge + its own job)", metric,
                title or "Worst / best case vs compute budget")
    for _, row in budget.iterrows():
        ax.annotate(f"k={int(row['k'])}", (row["compute_seconds"], row["best"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize="x-small")
    if "policy" in budget:
        _policy_note(ax, budget["policy"].iloc[0])
    return ax


def _policy_note(ax: Any, policy: str) -> None:
    """Print the teacher cost policy in the figure's lower left corner."""
    ax.text(0.01, 0.01, f"teacher cost: {policy}", transform=ax.transAxes, fontsize="small",
            va="bottom", ha="left", bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})


def plot_robust_by_k(robust: pd.DataFrame, paper: pd.DataFrame | None = None, metric: str = "score",
                     title: str | None = None, ax: Any = None) -> Any:
    """Size-matched worst / best case and mean per k with their bootstrap intervals (from a
    ``stats.robust_summary`` table of one grid point); the paper's worst / best (``summary_by_k``)
    dashed beside them, so the sample-size effect shows as the gap between the two."""
    ax = _axes(ax)
    robust = robust.sort_values("k")
    m = int(robust["m"].iloc[0])
    for stat, label in (("worst_m", f"worst case, expected min of m={m} runs"),
                        ("best_m", f"best case, expected max of m={m} runs"), ("mean", "mean over runs")):
        color = STYLE[stat.removesuffix("_m")][0]
        ax.plot(robust["k"], robust[stat], marker="o", color=color, label=label)
        ax.fill_between(robust["k"], robust[f"{stat}_lo"], robust[f"{stat}_hi"], color=color, alpha=0.15, linewidth=0)
    if paper is not None:
        paper = paper.sort_values("k")
        for stat in ("worst", "best"):
            ax.plot(paper["k"], paper[stat], linestyle="--", color=STYLE[stat][0], alpha=0.7,
                    label=f"{stat} case, paper (min/max over all runs)")
    ax.set_xticks(sorted(robust["k"].unique()))
    ax.set_xlabel("number of teachers k")
    ax.set_ylabel(f"student {metric} (bands: 95% bootstrap CI)")
    ax.set_title(title or "Size-matched worst / best case vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    return ax


def plot_expected_budget(table: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """Expected best (solid) and worst (dashed) score of n students against the compute they cost,
    one colour per k (from a ``stats.expected_by_budget`` table of one grid point); the teacher
    cost policy is printed on the figure."""
    import matplotlib.pyplot as plt

    ax = _axes(ax)
    ks = sorted(table["k"].unique())
    colors = plt.get_cmap("viridis")([i / max(1, len(ks) - 1) for i in range(len(ks))])
    for k, color in zip(ks, colors):
        sub = table[table["k"] == k].sort_values("n")
        ax.plot(sub["compute_seconds"], sub["expected_best"], color=color, label=f"k={k}")
        ax.plot(sub["compute_seconds"], sub["expected_worst"], color=color, linestyle="--")
    ax.plot([], [], color="grey", label="expected best of n")
    ax.plot([], [], color="grey", linestyle="--", label="expected worst of n")
    ax.set_xscale("log")
    ax.set_xlabel("compute spent on n = 1, 2, ... students, seconds (log)")
    ax.set_ylabel(f"student {metric}")
    ax.set_title(title or "Expected best / worst of n students vs compute")
    _policy_note(ax, table["policy"].iloc[0])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def plot_compare(table: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """Several sweeps in one figure: per sweep (one colour) the size-matched worst (v), best (^)
    and mean (dotted) per k with bootstrap bands, from a table of ``stats.robust_summary`` rows
    with a ``sweep`` column (one grid point per sweep label)."""
    import matplotlib.pyplot as plt

    ax = _axes(ax)
    colors = plt.get_cmap("tab10").colors
    for i, (name, sub) in enumerate(table.groupby("sweep", sort=False)):
        sub, color = sub.sort_values("k"), colors[i % len(colors)]
        for stat, style in (("worst_m", {"marker": "v"}), ("best_m", {"marker": "^"}),
                            ("mean", {"linestyle": ":", "marker": "."})):
            ax.plot(sub["k"], sub[stat], color=color, label=f"{name}: {stat.removesuffix('_m')}", **style)
            ax.fill_between(sub["k"], sub[f"{stat}_lo"], sub[f"{stat}_hi"], color=color, alpha=0.08, linewidth=0)
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_xlabel("number of teachers k")
    ax.set_ylabel(f"student {metric} (size-matched; bands: bootstrap CI)")
    ax.set_title(title or "Sweeps compared")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    return ax
