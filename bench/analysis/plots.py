"""Figures: worst / best / mean case against k or against compute, the paper's single- vs
multi-teacher curves, and the calibrated gains of k teachers over one.

Each function draws on ``ax`` (a new figure when None) and returns the Axes. Legends sit under
the plotting area and notes in the title, so they never hide data; a quantity whose uncertainty
is not known (one combination at k = N has no spread over combinations; a design too small for
an interval) is drawn hollow, without a band or bar, and the legend says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

STYLE = {
    "worst": ("tab:red", "worst case (worst run of a combination)"),
    "best": ("tab:green", "best case (best run of a combination)"),
    "mean": ("tab:blue", "mean over runs"),
}


def _axes(ax: Any) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 4))
    return ax


def _legend_below(ax: Any, ncol: int = 2) -> None:
    """The legend under the axes (outside the data)."""
    ax.legend(fontsize="x-small", ncol=ncol, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def _bands(table: pd.DataFrame, x: str, ax: Any, xlabel: str, metric: str, title: str) -> Any:
    """Worst / best / mean lines with +-1 std (over combinations) against column ``x``, joined
    in k order: shaded bands when x grows with k, vertical bars otherwise (a band needs a
    monotone x). Where a k has a single combination its spread is unknown: no band or bar, a
    hollow marker, and a legend entry saying so."""
    table = table.sort_values("k")
    single = (table["n_combinations"] <= 1) if "n_combinations" in table else pd.Series(False, index=table.index)
    monotone = bool(table[x].is_monotonic_increasing)
    for stat, (color, label) in STYLE.items():
        y, s = table[stat], table[f"{stat}_std"].where(~single)
        ax.plot(table[x], y, color=color, label=label)
        ax.plot(table[x][~single], y[~single], "o", color=color)
        ax.plot(table[x][single], y[single], "o", color=color, markerfacecolor="white")
        if monotone:
            ax.fill_between(table[x], y - s, y + s, color=color, alpha=0.15, linewidth=0)
        else:
            ax.errorbar(table[x][~single], y[~single], yerr=s[~single], fmt="none", ecolor=color, alpha=0.5, capsize=2)
    if single.any():
        ax.plot([], [], "o", color="grey", markerfacecolor="white", label="one combination: spread unknown")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"student {metric}\n(mean over combinations, ±1 std)")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return ax


def plot_by_k(
    summary: pd.DataFrame,
    metric: str = "score",
    title: str | None = None,
    ax: Any = None,
    single: pd.DataFrame | None = None,
) -> Any:
    """Worst / best / mean case per k (the paper's Figures 2, 3, 6) from a ``summary_by_k`` table
    restricted to one grid point; with ``single`` (rows with k, single_worst, single_best: a
    ``stats.robust_tables`` summary) the paper's single-teacher curves (the members' k=1 runs
    pooled) dashed beside them."""
    ax = _bands(
        summary, "k", _axes(ax), "number of teachers k", metric, title or "Worst / best case vs number of teachers"
    )
    if single is not None and not single.empty:
        single = single.sort_values("k")
        for stat in ("worst", "best"):
            ax.plot(
                single["k"],
                single[f"single_{stat}"],
                linestyle="--",
                color=STYLE[stat][0],
                label=f"{stat}, single teacher (members' k=1 runs pooled)",
            )
        _legend_below(ax)
    ax.set_xticks(sorted(summary["k"].unique()))
    return ax


def plot_budget(budget: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """Worst / best / mean case against the compute one student costs (teachers included; the
    paper's Figures 4, 5, 7) from a ``budget`` table restricted to one grid point, joined in k
    order; its ``policy`` column, when present, names what the student is charged for its
    teachers (in the title). With a ``compute_kwh`` column, a kWh axis on top: mapped from the
    seconds axis through the k points when energy grows with compute (as it does when it is
    measured or estimated from CPU time), else each k's kWh is written beside its label."""
    policy = f" (teacher cost: {budget['policy'].iloc[0]})" if "policy" in budget else ""
    ax = _bands(
        budget,
        "compute_seconds",
        _axes(ax),
        "compute per student, seconds (its k teachers' charge + its own job)",
        metric,
        (title or "Worst / best case vs compute budget") + policy,
    )
    ordered = budget.sort_values("k")
    kwh_axis = "compute_kwh" in budget and _kwh_axis(ax, ordered)
    for i, (_, row) in enumerate(ordered.iterrows()):
        # alternate above / below the best-case point, so neighbours on the x axis do not collide
        label = f"k={int(row['k'])}"
        if "compute_kwh" in budget and not kwh_axis:
            label += f", {row['compute_kwh']:.2g} kWh"
        ax.annotate(
            label,
            (row["compute_seconds"], row["best"]),
            textcoords="offset points",
            xytext=(0, 7 if i % 2 == 0 else -13),
            ha="center",
            fontsize="x-small",
        )
    return ax


def _extrapolate(x: Any, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear through (xp, fp), continued by the end segments (np.interp would clamp,
    and an axis beyond the data would then have every tick at one place)."""
    x = np.asarray(x, float)
    y = np.interp(x, xp, fp)
    lo, hi = (fp[1] - fp[0]) / (xp[1] - xp[0]), (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return np.where(x < xp[0], fp[0] + (x - xp[0]) * lo, np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * hi, y))


def _kwh_axis(ax: Any, ordered: pd.DataFrame) -> bool:
    """A top x axis in kWh, interpolated through the (seconds, kWh) points of ``ordered``, when
    both increase together; False (no axis) otherwise."""
    by_seconds = ordered.sort_values("compute_seconds")
    sec, kwh = by_seconds["compute_seconds"].to_numpy(float), by_seconds["compute_kwh"].to_numpy(float)
    if len(sec) < 2 or not (np.all(np.diff(sec) > 0) and np.all(np.diff(kwh) > 0)):
        return False
    top = ax.secondary_xaxis(
        "top", functions=(lambda s: _extrapolate(s, sec, kwh), lambda e: _extrapolate(e, kwh, sec))
    )
    top.set_xlabel("energy per student, kWh (same charges)", fontsize="small")
    top.xaxis.set_major_formatter(lambda v, _: f"{v:.2g}")  # no "1e-5" offset text over the label
    ax.set_title(ax.get_title(), fontsize="medium", y=1.16)  # above the top axis and its label
    return True


def plot_robust_by_k(comparison: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """The gain of k teachers over the base k (from a ``stats.robust_tables`` comparison table of
    one grid point): size-matched worst case, best case and mean, each with its calibrated
    interval (> 0 is better, lower perplexity too). A k whose interval the design cannot give is
    drawn hollow, without a bar."""
    ax = _axes(ax)
    table = comparison.sort_values("k")
    base, m = int(table["base_k"].iloc[0]), int(table["m"].iloc[0])
    for i, (stat, color, label) in enumerate(
        (
            ("worst_m", STYLE["worst"][0], f"worst case (m={m})"),
            ("best_m", STYLE["best"][0], f"best case (m={m})"),
            ("mean", STYLE["mean"][0], "mean"),
        )
    ):
        x = table["k"].to_numpy(float) + (i - 1) * 0.12
        y, lo, hi = (table[f"gain_{stat}{s}"].to_numpy(float) for s in ("", "_lo", "_hi"))
        known = np.isfinite(lo)
        ax.errorbar(
            x[known],
            y[known],
            yerr=[y[known] - lo[known], hi[known] - y[known]],
            fmt="o",
            color=color,
            capsize=3,
            label=label,
        )
        ax.plot(x[~known], y[~known], "o", color=color, markerfacecolor="white")
    if not np.isfinite(table["gain_worst_m_lo"].to_numpy(float)).all():
        ax.plot([], [], "o", color="grey", markerfacecolor="white", label="no interval: design too small")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_xlabel(f"number of teachers k (against k={base})")
    ax.set_ylabel(f"gain in student {metric} over k={base}\n(> 0 better; bars: confidence intervals)")
    ax.set_title(title or f"Size-matched gain of k teachers over k={base}", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend_below(ax, ncol=3)
    return ax


def plot_expected_budget(table: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """Expected best (solid) and worst (dashed) score of n students against the compute they cost,
    one colour per k (from a ``stats.expected_by_budget`` table of one grid point; n stops at the
    runs at k, so nothing is extrapolated); the teacher cost policy is in the title."""
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
    ax.set_xlabel("compute spent on n = 1 .. (runs at k) students, seconds (log)")
    ax.set_ylabel(f"student {metric}")
    ax.set_title(
        (title or "Expected best / worst of n students vs compute") + f" (teacher cost: {table['policy'].iloc[0]})",
        fontsize="medium",
    )
    ax.grid(alpha=0.3, which="both")
    _legend_below(ax, ncol=4)
    return ax


def plot_compare(table: pd.DataFrame, metric: str = "score", title: str | None = None, ax: Any = None) -> Any:
    """Several sweeps in one figure: per sweep (one colour) the size-matched gain of the worst case
    (v) and of the mean (o) over the base k, with calibrated intervals, from ``stats.robust_tables``
    comparison rows with a ``sweep`` column (one grid point per sweep label)."""
    import matplotlib.pyplot as plt

    ax = _axes(ax)
    colors = plt.color_sequences["tab10"]  # the colours of the tab10 colormap, typed (as a list)
    groups = list(table.groupby("sweep", sort=False))
    for i, (name, sub) in enumerate(groups):
        sub, color = sub.sort_values("k"), colors[i % len(colors)]
        shift = (i - (len(groups) - 1) / 2) * 0.1
        for stat, marker in (("worst_m", "v"), ("mean", "o")):
            y, lo, hi = (sub[f"gain_{stat}{s}"].to_numpy(float) for s in ("", "_lo", "_hi"))
            known = np.isfinite(lo)
            x = sub["k"].to_numpy(float) + shift + (0.03 if stat == "mean" else -0.03)
            ax.errorbar(
                x[known],
                y[known],
                yerr=[y[known] - lo[known], hi[known] - y[known]],
                fmt=marker,
                color=color,
                capsize=2,
                label=f"{name}: {stat.removesuffix('_m')}",
            )
            ax.plot(x[~known], y[~known], marker, color=color, markerfacecolor="white")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_xlabel("number of teachers k")
    ax.set_ylabel(f"gain in student {metric} over the base k\n(size-matched; > 0 better; bars: CI)")
    ax.set_title(title or "Sweeps compared", fontsize="medium")
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return ax
