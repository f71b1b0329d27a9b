"""The verdict of an adaptive design: the contrast of k = K against the base k after each batch,
with intervals that hold their error rate over every planned look together, so that stopping
at any look (for any reason) keeps it (docs/statistics.md section 9).

Each look computes the same model-based contrast as the report (``stats.point_model`` on the runs
so far: the size-matched statistic of the complete cells present, with the seed x k and primary x k
interactions; ``stats.contrast``), at level
1 - alpha_j. The error is spent evenly over the looks at which the design can decide at all
(alpha_j = error / L', L' the looks whose cells leave the fit at least ``MIN_DF`` residual degrees
of freedom, or any at the last look; a look without them does not decide and spends nothing: that depends on the design,
never on the scores).
By the union bound the probability that some look's interval misses the true contrast is at
most sum_j alpha_j = error, so every stopping rule that reads these intervals (stop when one
excludes 0, or is narrow enough, or the money is spent) keeps the error rate: the intervals are
a confidence sequence over the L planned looks (anytime-valid over those looks; not beyond
them, and only as calibrated as each fixed-level interval is, benchmarks/calibration.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from bench.analysis.aggregate import _ok
from bench.analysis.stats import _grid_points, contrast, default_m, fit_k_model, point_model

STOP_REASONS = ("effect", "precise", "budget", "complete")
MIN_DF = 5  # a look decides only when the design leaves the k model this many residual degrees of freedom

CellKey = tuple[str, int]  # (combination "0-3-4", primary or -1): a cell of the runs table


@dataclass(frozen=True)
class Look:
    """One look: its index (1-based), the student jobs planned up to it, the error it spends and
    per grid point the gain (> 0: better) of k over base_k with its interval at 1 - alpha; the
    decision ("effect", "precise" or None: continue)."""

    look: int
    jobs: int
    alpha: float
    points: tuple[dict, ...]
    decision: str | None

    def to_json(self) -> dict:
        return asdict(self)


def cell_key(combination: Sequence[int], primary: int) -> CellKey:
    """The runs table's name of a cell (``bench.plan.design.Cell``)."""
    return ("-".join(str(t) for t in combination), int(primary))


def in_cells(runs: pd.DataFrame, cells: set[CellKey]) -> pd.DataFrame:
    """The rows of ``runs`` whose (combination, primary) is one of ``cells``."""
    primary = pd.array(runs["primary"], dtype="Int64").fillna(-1).astype(int) if "primary" in runs else -1
    keys = pd.Series(list(zip(runs["combination"], np.broadcast_to(primary, len(runs)))), index=runs.index)
    return runs[keys.isin(cells)]


def can_decide(combinations: Sequence[str], target_k: int, base_k: int = 1, min_df: int = MIN_DF) -> bool:
    """Whether a design holding these combinations (complete) can test k = target_k against
    base_k: both present and the k model left with residual degrees of freedom. Depends on the
    design only, not on any score. Fewer than ``min_df`` residual degrees of freedom count as
    none: such a look's interval is too wide to decide anything, and spending error on it would
    only narrow the others less."""
    ks = [len(c.split("-")) for c in combinations]
    if target_k not in ks or base_k not in ks:
        return False
    frame = pd.DataFrame({"k": ks, "combination": list(combinations), "y": 0.0, "n_cells": 1})
    return fit_k_model(frame, "y").df >= min_df


def decidable_looks(prefixes: Sequence[Sequence[str]], target_k: int) -> list[bool]:
    """Per look (the combinations its prefix holds): whether it decides. ``can_decide`` with
    ``MIN_DF``, except the last look, which decides with any residual degree of freedom (so a small
    design still gets the verdict the full design would give)."""
    return [can_decide(p, target_k, min_df=1 if i == len(prefixes) - 1 else MIN_DF) for i, p in enumerate(prefixes)]


def look_alphas(error: float, decidable: Sequence[bool]) -> list[float]:
    """The error spent at each look: error / L' at each of the L' looks that can decide, 0 at the
    others (Bonferroni over the planned looks)."""
    n = sum(decidable)
    return [error / n if d and n else 0.0 for d in decidable]


def look_intervals(
    runs: pd.DataFrame,
    k: int,
    statistic: str,
    alpha: float,
    higher_is_better: bool = True,
    grid: Sequence[str] = (),
    base_k: int = 1,
    m: int | None = None,
) -> tuple[dict, ...]:
    """Per grid point of ``runs`` (the runs table so far): the gain of ``statistic`` at k over
    base_k (turned so that > 0 is better) with its interval at level 1 - alpha, from the report's
    k model with its interactions (``stats.point_model``), half-width and df (NaN when it cannot be
    tested). ``m``: the size of the size-matched extremes (default: the repeats run)."""
    out = []
    sign = 1.0 if higher_is_better else -1.0
    ok = _ok(runs)
    m = m or default_m(ok)
    for point, sub in _grid_points(ok, grid):
        row = {**point, "estimate": np.nan, "lo": np.nan, "hi": np.nan, "half_width": np.nan, "df": 0.0}
        model = point_model(sub, m, higher_is_better, (statistic,)) if alpha > 0 else None
        if model is not None and not model.per_comb.empty:
            fit = model.fits[statistic]
            if k in fit.ks and base_k in fit.ks:
                c = contrast(fit, k, base_k, 1 - alpha)
                lo, hi = sorted((sign * c.lo, sign * c.hi)) if np.isfinite(c.lo) else (c.lo, c.hi)
                row.update(estimate=sign * c.estimate, lo=lo, hi=hi, half_width=(hi - lo) / 2, df=c.df)
        out.append({key: (float(v) if isinstance(v, (float, np.floating)) else v) for key, v in row.items()})
    return tuple(out)


def reading(point: dict) -> str:
    """ "better" / "worse" when the interval excludes 0, "unclear" when it holds 0, "untestable"
    without one (``stats.call``'s words)."""
    lo, hi = point["lo"], point["hi"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "untestable"
    return "better" if lo > 0 else "worse" if hi < 0 else "unclear"


def decide(points: Sequence[dict], tolerance: float) -> str | None:
    """ "effect" when every grid point's interval excludes 0; "precise" when every point either
    excludes 0 or has a half-width of at most ``tolerance`` (> 0); None (continue) otherwise."""
    readings = [reading(p) for p in points]
    if not points or "untestable" in readings:
        return None
    if all(r in ("better", "worse") for r in readings):
        return "effect"
    if tolerance > 0 and all(r != "unclear" or p["half_width"] <= tolerance for r, p in zip(readings, points)):
        return "precise"
    return None


def evaluate_look(
    runs: pd.DataFrame,
    look: int,
    jobs: int,
    alpha: float,
    k: int,
    statistic: str,
    tolerance: float,
    higher_is_better: bool = True,
    grid: Sequence[str] = (),
    m: int | None = None,
) -> Look:
    """One look over the runs recorded so far (``look_intervals``, then ``decide``)."""
    points = look_intervals(runs, k, statistic, alpha, higher_is_better, grid, m=m)
    return Look(look, jobs, alpha, points, decide(points, tolerance) if alpha > 0 else None)


def over_budget(jobs: int, total: int, budget: float) -> bool:
    """Whether ``jobs`` student jobs pass ``budget`` (a fraction of the plan's ``total``)."""
    return jobs > budget * total + 1e-9


def replay(
    runs: pd.DataFrame,
    batches: Sequence[Sequence[CellKey]],
    k: int,
    statistic: str = "worst_m",
    error: float = 0.05,
    tolerance: float = 0.0,
    budget: float = 1.0,
    higher_is_better: bool = True,
    grid: Sequence[str] = (),
) -> tuple[list[Look], str]:
    """Run an adaptive design over a completed sweep's runs table, batch after batch of cells, as
    ``bench run`` would have (benchmarks/adaptive.py, tests): the looks made and why it stopped."""
    total = len(in_cells(runs, {c for b in batches for c in b}))
    combos = [sorted({c for b in batches[: i + 1] for c, _ in b}) for i in range(len(batches))]
    alphas = look_alphas(error, decidable_looks(combos, k))
    m = default_m(runs)
    looks: list[Look] = []
    prefix: set[CellKey] = set()
    for j, batch in enumerate(batches):
        prefix |= set(batch)
        n_jobs = len(in_cells(runs, prefix))
        if over_budget(n_jobs, total, budget):
            return looks, "budget"
        look = evaluate_look(
            in_cells(runs, prefix), j + 1, n_jobs, alphas[j], k, statistic, tolerance, higher_is_better, grid, m
        )
        looks.append(look)
        if look.decision:
            return looks, look.decision
    return looks, "complete"
