"""Statistics of a sweep, as plain functions over one documented DataFrame shape.

The **runs table** (``jobs_frame``) has one row per distillation run and at least the columns
``k`` (int), ``combination`` (str, teacher indices joined by '-', e.g. "0-3-4") and ``score``
(float, the task's headline metric on dev), plus one column per grid axis (e.g. ``temperature``).
Every function takes ``grid`` = the names of those grid columns (``()`` without a grid).

The paper's statistics (Ilichev et al. 2021, Figures 2-7): for each combination the min (worst
case), max (best case) and mean over all its runs; for each k the mean of those over the C(N,k)
combinations, with the standard deviation over combinations (ddof=0: the combinations are the
whole population, not a sample) as the band; k=N has one combination, so no spread (the figures
draw no band there rather than a band of zero width).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bench.core.records import decode_array

STAT_COLUMNS = ("worst", "best", "mean")


def _combination_order(col: pd.Series) -> pd.Series:
    """Sort key: combinations by their teacher indices as numbers ("2" before "10")."""
    if col.name == "combination":
        return col.map(lambda c: tuple(int(i) for i in c.split("-")))
    return col


def _constant_predictions(record: dict) -> bool | None:
    """Whether the run predicted one class for every example of its score split (None when the
    record holds no predictions, e.g. language models)."""
    encoded = (record.get("predictions") or {}).get(record.get("score_split", "dev"))
    if not encoded:
        return None
    return bool(len(set(decode_array(encoded).tolist())) == 1)


def jobs_frame(records: Sequence[dict], grid: Sequence[str] = ()) -> pd.DataFrame:
    """The runs table from job records (ok and failed), one row per record."""
    rows = []
    for r in records:
        row = {
            "key": r["key"],
            "status": r["status"],
            "k": r["k"],
            "combination": "-".join(str(i) for i in r["combination"]),
            "primary": r.get("primary"),
            "repeat": r["repeat"],
            **{g: r["grid"].get(g) for g in grid},
            "score": r.get("score"),
            "metric": r.get("metric"),
            "attempts": r.get("attempts"),
            "device": r.get("device"),
            "error": r.get("error"),
            "n_params": r.get("n_params"),
        }
        for split, metrics in (r.get("scores") or {}).items():
            for m, v in metrics.items():
                row[f"{split}_{m}"] = v
        for t, v in (r.get("timings") or {}).items():
            row[f"t_{t}"] = v
        energy = r.get("energy") or {}  # records before energy was measured have none
        row["energy_kwh"], row["energy_source"] = energy.get("kwh"), energy.get("source")
        row["teacher_keys"] = ",".join(r["teacher_keys"])
        row["constant_predictions"] = _constant_predictions(r)
        fidelity = (r.get("teacher_work") or {}).get("cache_fidelity")
        if fidelity:  # LM top-K caches: how well the cached KD gradient matches the exact one
            row["cache_grad_cosine"] = fidelity["grad_cosine"]
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["primary"] = df["primary"].astype("Int64")
    return df.sort_values(
        [*grid, "k", "combination", "primary", "repeat"], na_position="first", kind="stable", key=_combination_order
    ).reset_index(drop=True)


def _ok(jobs: pd.DataFrame) -> pd.DataFrame:
    """The successful runs, with numeric score and timing columns."""
    if "status" in jobs:
        jobs = jobs[jobs["status"] == "ok"]
    numeric = [c for c in jobs.columns if c in ("score", "energy_kwh") or c.startswith("t_")]
    return jobs.astype({c: float for c in numeric})


def by_combination(jobs: pd.DataFrame, grid: Sequence[str] = ()) -> pd.DataFrame:
    """Per (grid point, k, combination): min, max, mean, std (ddof=1) of the score and n_runs."""
    g = _ok(jobs).groupby([*grid, "k", "combination"], sort=True)["score"]
    out = g.agg(min="min", max="max", mean="mean", std="std", n_runs="count").reset_index()
    return out.sort_values([*grid, "k", "combination"], key=_combination_order, kind="stable").reset_index(drop=True)


def summary_by_k(by_comb: pd.DataFrame, grid: Sequence[str] = (), higher_is_better: bool = True) -> pd.DataFrame:
    """Per (grid point, k): the mean over combinations of the combination min (worst), max (best)
    and mean, their std over combinations (ddof=0), n_combinations and n_runs. For a metric where
    lower is better (perplexity), worst is the combination max and best its min."""
    g = by_comb.groupby([*grid, "k"], sort=True)
    lo, hi = ("min", "max") if higher_is_better else ("max", "min")
    out = pd.DataFrame(
        {
            "worst": g[lo].mean(),
            "worst_std": g[lo].std(ddof=0),
            "best": g[hi].mean(),
            "best_std": g[hi].std(ddof=0),
            "mean": g["mean"].mean(),
            "mean_std": g["mean"].std(ddof=0),
            "n_combinations": g.size(),
            "n_runs": g["n_runs"].sum(),
        }
    )
    return out.reset_index()


def budget(
    jobs: pd.DataFrame,
    teacher_seconds: dict[str, float],
    grid: Sequence[str] = (),
    higher_is_better: bool = True,
    teacher_kwh: dict[str, float] | None = None,
) -> pd.DataFrame:
    """The summary by k against compute: what one k-teacher student costs from scratch.

    Per combination: ``teacher_seconds`` = the sum of its k teachers' costs (the argument maps
    teacher key -> seconds; the report passes fine-tuning + evaluation + output caching);
    ``student_seconds`` = the mean over its runs of the job's ``t_total`` (setup + train + eval,
    no queue wait); ``compute_seconds`` = their sum. Per k: their means over combinations, next to
    the worst/best/mean statistics of ``summary_by_k``. With ``teacher_kwh`` (teacher key -> kWh)
    and every ok run's ``energy_kwh``, the same in energy: ``teacher_kwh``, ``student_kwh``,
    ``compute_kwh``.
    """
    ok = _ok(jobs)
    energy = teacher_kwh is not None and "energy_kwh" in ok and bool(ok["energy_kwh"].notna().all())
    agg = {"student_seconds": ("t_total", "mean"), "teacher_keys": ("teacher_keys", "first")}
    units = [("seconds", teacher_seconds)]
    if energy:
        agg["student_kwh"] = ("energy_kwh", "mean")
        units.append(("kwh", teacher_kwh or {}))
    costs = ok.groupby([*grid, "k", "combination"], sort=True).agg(**agg).reset_index()
    for unit, per_teacher in units:
        costs[f"teacher_{unit}"] = [sum(per_teacher[t] for t in keys.split(",")) for keys in costs["teacher_keys"]]
        costs[f"compute_{unit}"] = costs[f"teacher_{unit}"] + costs[f"student_{unit}"]
    columns = [f"{part}_{unit}" for unit, _ in units for part in ("compute", "teacher", "student")]
    per_k = costs.groupby([*grid, "k"], sort=True)[columns].mean()
    summary = summary_by_k(by_combination(ok, grid), grid, higher_is_better)
    return per_k.reset_index().merge(summary, on=[*grid, "k"])


def scores_by_grid(jobs: pd.DataFrame, grid: Sequence[str] = ()) -> pd.DataFrame:
    """Per grid point: the mean over ok runs of every score column (``<split>_<metric>``) and
    n_runs; the shape of Gholami & Omar's Tables 3-4 (metrics per T and alpha)."""
    ok = _ok(jobs)
    cols = [
        c
        for c in ok.columns
        if "_" in c
        and c.split("_", 1)[0] not in ("t", "n", "teacher", "energy")
        and pd.api.types.is_numeric_dtype(ok[c])
    ]
    if not grid:
        return ok[cols].mean().to_frame().T.assign(n_runs=len(ok))
    out = ok.groupby(list(grid), sort=True)[cols].mean()
    out["n_runs"] = ok.groupby(list(grid), sort=True).size()
    return out.reset_index()
