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
    paper's Figures 4, 5, 7) from a ``budget`` table restricted to one grid point."""
    ax = _bands(budget, "compute_seconds", _axes(ax),
                "compute per student, seconds (its k teachers' fine-tuning + its own job)", metric,
                title or "Worst / best case vs compute budget")
    for _, row in budget.iterrows():
        ax.annotate(f"k={int(row['k'])}", (row["compute_seconds"], row["best"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize="x-small")
    return ax
