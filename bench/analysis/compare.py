"""``bench compare``: several sweeps (e.g. TinyBERT vs DistilBERT, T=1 vs T=2) in one table and
one figure of the size-matched gains of k teachers over the base k with calibrated intervals, from records only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.analysis.aggregate import by_combination, jobs_frame, summary_by_k
from bench.analysis.document import to_html, to_markdown
from bench.analysis.plots import plot_compare
from bench.analysis.report import ReportOptions, _metric_label, check_m, planned_records, save_figure
from bench.analysis.robustness import verdict_tables
from bench.analysis.stats import degenerate_notes, robust_tables
from bench.analysis.verdict import sweep_verdict
from bench.core.errors import UserError
from bench.core.files import atomic_write_bytes, folder_lock, remove_stale_temps
from bench.plan.jobs import Plan
from bench.tasks.table import LOWER_IS_BETTER


def _label(name: str, point: dict) -> str:
    return name + "".join(f", {g}={v:g}" for g, v in point.items())


def compare_table(plans: list[Plan], options: ReportOptions = ReportOptions()) -> tuple[pd.DataFrame, list, list]:
    """One row per (sweep and grid point, k): the paper's worst / best and single-teacher pooled
    ones, the size-matched statistics and their calibrated gains over the base k; and per sweep
    its metric label and its verdict."""

    frames, metrics, verdicts = [], [], []
    for plan in plans:
        sweep = plan.sweep
        grid = sorted(sweep.grid)
        check_m(options, sweep.repeats)
        records = [r for r in planned_records(plan) if r["status"] == "ok"]
        if not records:
            raise UserError(
                f"{sweep.source}: sweep '{sweep.name}' has no ok records under {sweep.results_dir()}; "
                f"expected a sweep that has run (bench run {sweep.source})"
            )
        jobs = jobs_frame(records, grid)
        higher = records[0]["metric"] not in LOWER_IS_BETTER
        paper = summary_by_k(by_combination(jobs, grid), grid, higher)
        robust, comparison = robust_tables(jobs, grid, options.m, higher, options.base_k, options.level)
        if robust.empty or comparison.empty:
            raise UserError(
                f"{sweep.source}: sweep '{sweep.name}' has no complete runs at k={options.base_k} and at "
                f"another k to compare; expected a sweep that has run (bench run {sweep.source})"
            )
        gains = [c for c in comparison.columns if c.startswith(("gain_", "p_"))] + ["mde_worst_m"]
        table = robust.merge(paper[[*grid, "k", "worst", "best"]], on=[*grid, "k"]).merge(
            comparison[[*grid, "k", *gains]], on=[*grid, "k"], how="left"
        )
        table["base_k"] = options.base_k
        table.loc[table["k"] == options.base_k, ["gain_worst_m", "gain_best_m", "gain_mean"]] = 0.0  # none over itself
        table.insert(0, "sweep", [_label(sweep.name, {g: row[g] for g in grid}) for _, row in table.iterrows()])
        frames.append(table.drop(columns=grid))
        metric = _metric_label(records[0])
        metrics.append(metric)
        tables = verdict_tables(jobs, sweep.report, grid, options.m, higher, options.base_k, options.level)
        headline, failures = tables.headline, tables.failures
        notes = degenerate_notes(jobs, grid)
        text = sweep_verdict(sweep, paper, robust, comparison, metric, higher, options.level, notes, headline, failures)
        verdicts.append(f"**{sweep.name}**: " + text)
    return pd.concat(frames, ignore_index=True), metrics, verdicts


def write_comparison(plans: list[Plan], options: ReportOptions = ReportOptions(), out: Path | None = None) -> Path:
    """compare.csv, compare.png/.pdf, compare.md and a self-contained compare.html; returns the folder
    (default: reports/compare-<A>-vs-<B>), written under its lock (a second comparison into the
    same folder waits)."""
    names = [p.sweep.name for p in plans]
    if len(set(names)) != len(names):
        raise UserError(f"bench compare: expected sweeps with distinct names, got {', '.join(names)}")
    out = out or Path(plans[0].sweep.paths.reports) / ("compare-" + "-vs-".join(names))
    table, metrics, verdicts = compare_table(plans, options)
    with folder_lock(out, "bench compare of these sweeps"):
        remove_stale_temps(out)
        _write(out, table, metrics, verdicts, names, options)
    return out


def _write(out: Path, table: pd.DataFrame, metrics: list, verdicts: list, names: list, options: ReportOptions) -> None:
    """compare.csv, the figure, compare.md and compare.html into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atomic_write_bytes(out / "compare.csv", table.to_csv(index=False, float_format="%.6g").encode())
    metric = metrics[0] if len(set(metrics)) == 1 else "score"
    fig, ax = plt.subplots(figsize=(7.5, 5))
    plot_compare(table, metric, title=" vs ".join(names), ax=ax)
    fig.tight_layout()
    save_figure(fig, out / "compare")
    shown = table[
        [
            "sweep",
            "k",
            "worst",
            "single_worst",
            "worst_m",
            "gain_worst_m",
            "gain_worst_m_lo",
            "gain_worst_m_hi",
            "best",
            "single_best",
            "best_m",
            "gain_best_m",
            "gain_best_m_lo",
            "gain_best_m_hi",
            "mean",
            "gain_mean",
            "iqm",
            "m",
            "n_combinations",
            "n_runs",
        ]
    ]
    blocks = [
        ("h1", "Sweeps compared: " + " vs ".join(f"`{n}`" for n in names)),
        (
            "p",
            "Per sweep (and grid point) and k: the paper's worst / best (min / max over a combination's "
            "runs, averaged over combinations) and the single-teacher ones (its members' k=1 runs pooled), "
            "the size-matched worst / best of m runs and the mean, and each one's gain over the base k "
            f"(> 0 better) with its calibrated {options.level:.0%} interval (`bench/analysis/stats.py`, "
            "docs/statistics.md)."
            + ("" if len(set(metrics)) == 1 else f" The sweeps report different metrics: {', '.join(metrics)}."),
        ),
        ("table", shown),
        ("img", "compare.png", "sweeps compared"),
        ("h2", "Verdicts"),
        *[("p", para) for v in verdicts for para in v.split("\n\n")],
        ("p", "Table: [compare.csv](compare.csv)."),
    ]
    atomic_write_bytes(out / "compare.md", to_markdown(blocks).encode())
    atomic_write_bytes(out / "compare.html", to_html(blocks, out, "Sweeps compared").encode())
