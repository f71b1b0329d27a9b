"""The verdict's sentences: every sentence one calibrated quantity (docs/statistics.md), so changing
the wording or adding a statistic touches this module only.

``headline_sentences`` reads the pre-registered contrast over every k and the failed runs
(``bench.analysis.robustness``); ``verdict`` the secondary reading, the largest k against the
base k alone, with what the design can tell and the paper's own comparison; ``sweep_verdict``
puts them together for one sweep (``bench report`` and ``bench compare``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.analysis import robustness
from bench.analysis.robustness import TOO_SMALL
from bench.analysis.stats import POWER, call


def _direction(gain: float, higher_is_better: bool) -> str:
    """'0.0012 higher (better)' / '... lower (worse)' for a gain (> 0 better) in the metric's terms."""
    if gain == 0:
        return "no different"
    up = (gain > 0) == higher_is_better
    return f"{abs(gain):.4f} {'higher' if up else 'lower'} ({'better' if gain > 0 else 'worse'})"


def _plan_sentence(row: pd.Series, design: str, level: float) -> str:
    """What the design can tell apart, and what would tell more (``stats.repeats_needed``)."""
    out = (
        f"This design ({design}) cannot reliably tell a worst-case change smaller than {row['mde_worst_m']:.4f} "
        f"from noise ({POWER:.0%} power at the {1 - level:.0%} level)"
    )
    need, share = row.get("repeats_needed"), row.get("run_noise_share")
    if need is not None and pd.notna(need):
        return out + (
            f"; what more repeats reduce (run noise and the seed x k interaction) is about {share:.0%} of that "
            f"noise, and about r = {int(need)} repeats (same m, "
            "set with --m) would halve it (an approximation)."
        )
    if share is None or not pd.notna(share):
        return (
            out + "; with r = 1 the run noise cannot be told from the spread between combinations, so r >= 2 is "
            "needed before the report can say how many repeats would help."
        )
    return out + (
        f"; what more repeats reduce (run noise and the seed x k interaction) is about {share:.0%} of that noise, "
        "so no number of repeats up to 50 would halve it: the rest is the spread between teacher combinations, "
        "which repeats do not reduce."
    )


def _paper_sentence(a: pd.Series, row: pd.Series, higher_is_better: bool) -> str:
    """The paper's single- vs multi-teacher comparison at the verdict's k, raw and size-matched,
    as gains (> 0: multi-teacher better); '' where the numbers are missing."""
    sign = 1.0 if higher_is_better else -1.0
    if not all(pd.notna(a.get(c)) for c in ("single_worst", "single_worst_m", "worst", "worst_m")):
        return ""
    raw, matched = sign * (a["worst"] - a["single_worst"]), sign * (a["worst_m"] - a["single_worst_m"])
    same = int(row["base_k"]) == 1 and abs(matched - row["gain_worst_m"]) < 1e-9
    return (
        f"The paper's comparison at k={int(row['k'])}: the multi-teacher worst case (over a combination's runs) is "
        f"{a['worst']:.4f} against {a['single_worst']:.4f} for the same teachers' k=1 runs pooled, a gain of "
        f"{raw:+.4f} for multiple teachers; size-matched (m={int(row['m'])} runs of one cell on each side) the gain "
        f"is {matched:+.4f}" + (" (the contrast above)" if same else "") + f", so {raw - matched:+.4f} of the "
        "paper's gain comes from the number of runs each side takes its extreme over."
    )


def _points(frame: pd.DataFrame, grid: list[str]) -> list[tuple]:
    """The grid points of a table, sorted; one empty point without a grid."""
    return [()] if not grid else sorted({tuple(r[g] for g in grid) for _, r in frame.iterrows()})


def _at(frame: pd.DataFrame, grid: list[str], point: tuple) -> pd.DataFrame:
    """The rows of ``frame`` at one grid point."""
    for g, v in zip(grid, point):
        frame = frame[frame[g] == v]
    return frame


def _where(grid: list[str], point: tuple) -> str:
    """'temperature=2, alpha=0.5': a grid point in words ('' without a grid)."""
    return ", ".join(f"{g}={v:g}" for g, v in zip(grid, point))


def verdict(
    comparison: pd.DataFrame,
    grid: list[str],
    metric: str,
    higher_is_better: bool,
    level: float,
    summary: pd.DataFrame | None = None,
    design: str = "",
    notes: list[str] | None = None,
    planned_k: int | None = None,
) -> str:
    """One paragraph per grid point, each sentence a calibrated quantity (docs/statistics.md):
    at the largest k, the size-matched worst case against the base k with its interval and
    reading (``stats.call``), what the design can and cannot tell, the best case, and the
    paper's single- vs multi-teacher comparison raw and size-matched. Degenerate results
    (``stats.degenerate_notes``) come first; a grid point whose scores do not vary gets no
    verdict; when the largest planned k (``planned_k``) has no complete combination, the
    comparison is at the largest k that has one, and the paragraph says so."""
    head = "".join(f"Caution: {n}. " for n in notes or [])
    if comparison.empty:
        return head + "No verdict: the sweep has no complete runs at the base k and at another k to compare."
    sentences = []
    for point in _points(comparison, grid):
        sub = _at(comparison, grid, point)
        paper_sub = _at(summary, grid, point) if summary is not None else None
        row = sub.sort_values("k").iloc[-1]
        k, base = int(row["k"]), int(row["base_k"])
        where = _where(grid, point)
        lead = f"At {where}, at" if where else "At"
        if row.get("constant"):
            sentences.append(f"{'At ' + where + ', e' if where else 'E'}very run has the same score: no verdict.")
            continue
        if planned_k is not None and k < planned_k:
            sentences.append(
                f"k={planned_k} has no combination with m={int(row['m'])} complete runs yet, so the "
                f"comparison is at k={k}."
            )
        reading = call(row)
        means = f"(per-k means {row['worst_m_k']:.4f} vs {row['worst_m_base']:.4f})"
        subject = (
            f"the size-matched worst case (expected worst of m={int(row['m'])} runs of one teacher combination"
            f"{' and primary' if row.get('primary') else ''}; student {metric})"
        )
        if reading == "untestable":
            sentences.append(
                f"{lead} k={k} {subject} is {_direction(row['gain_worst_m'], higher_is_better)} than at k={base} "
                f"{means}, but this design ({design or 'as run'}) leaves no noise to test against (no residual "
                "degrees of freedom, or combinations that do not vary): too small to tell anything about k. At least "
                "3 teachers with every k would give an interval."
            )
            continue
        sentences.append(
            f"{lead} k={k} {subject} is {_direction(row['gain_worst_m'], higher_is_better)} than at k={base} {means}: "
            f"{level:.0%} CI of the gain [{row['gain_worst_m_lo']:+.4f}, {row['gain_worst_m_hi']:+.4f}], p = "
            f"{row['p_worst_m']:.2g} (t on {row['df']:.1f} df; the fit takes out each teacher's own quality, and the "
            "noise is the spread between teacher combinations and seeds, modelled from every k)."
        )
        sentences.append(
            {
                "better": "More teachers improved the worst case beyond that noise.",
                "worse": "More teachers made the worst case worse beyond that noise.",
                "unclear": "No change of the worst case beyond that noise is shown.",
            }[reading]
        )
        if reading == "unclear":
            sentences.append(_plan_sentence(row, design or "as run", level))
        best = call(row, "best_m")
        sentences.append(
            f"The best case is {_direction(row['gain_best_m'], higher_is_better)}, CI of the gain "
            f"[{row['gain_best_m_lo']:+.4f}, {row['gain_best_m_hi']:+.4f}]"
            + {
                "better": " (improved beyond the noise).",
                "worse": " (worse beyond the noise).",
                "unclear": " (no change shown).",
            }.get(best, ".")
        )
        if paper_sub is not None:
            at = paper_sub[paper_sub["k"] == k]
            if not at.empty:
                sentences.append(_paper_sentence(at.iloc[0], row, higher_is_better))
    return head + " ".join(s for s in sentences if s)


def sweep_verdict(
    sweep,
    paper: pd.DataFrame,
    robust: pd.DataFrame,
    comparison: pd.DataFrame,
    metric: str,
    higher_is_better: bool,
    level: float,
    notes: list[str],
    headline: pd.DataFrame | None = None,
    failures: pd.DataFrame | None = None,
) -> str:
    """The verdict of one sweep: its design in words, the headline over every k
    (``headline_sentences``, from ``robustness.headline_table`` and ``failure_table``) and then,
    as the secondary reading, ``verdict`` at the largest planned k (shared by ``bench report``
    and ``bench compare``)."""
    grid = sorted(sweep.grid)
    design = (
        f"N={sweep.teachers} teachers, k in {list(sweep.k)}, r={sweep.repeats}, "
        f"m={int(robust['m'].iloc[0]) if not robust.empty else '-'}"
    )
    merged = paper.merge(robust, on=[*grid, "k"], suffixes=("", "_r")) if not robust.empty else None
    secondary = verdict(
        comparison, grid, metric, higher_is_better, level, merged, design, notes, planned_k=max(sweep.k)
    )
    if headline is None or headline.empty:
        return secondary
    base = int(comparison["base_k"].iloc[0]) if not comparison.empty else 1
    first = headline_sentences(
        headline,
        failures if failures is not None else pd.DataFrame(),
        grid,
        metric,
        level,
        sweep.k,
        base,
        design,
        robustness.Multiplicity.of(sweep.report),
    )
    return first + "\n\n" + "Secondary reading, the largest k alone (all runs, failed ones included): " + secondary


_NAMES = {"worst_m": "worst case", "best_m": "best case", "mean": "mean"}


def headline_sentences(
    headline: pd.DataFrame,
    failures: pd.DataFrame,
    grid: list[str],
    metric: str,
    level: float,
    ks: Sequence[int],
    base_k: int,
    design: str,
    procedure: robustness.Multiplicity = robustness.Multiplicity(),
) -> str:
    """The verdict's headline, one paragraph per grid point (docs/statistics.md section 3): the
    pre-registered contrast over every k for the worst, best and mean case (of the runs that did
    not fail) with their intervals, the failure rate per k and its trend, which changes the
    multiple-testing ``procedure`` shows (named in one sentence), and in words whether more
    teachers made failures rarer, made the worst case better, or neither."""
    if headline.empty:
        return ""
    kind = str(headline["contrast"].iloc[0])
    out = []
    for point in _points(headline, grid):
        rows = _at(headline, grid, point).set_index("statistic")
        fails = _at(failures, grid, point) if not failures.empty else failures
        where = _where(grid, point)
        parts = []
        tested = [s for s in rows.index if rows.loc[s, "call"] != TOO_SMALL]  # what the procedure reads
        for s, name in _NAMES.items():
            if s not in rows.index:
                continue
            r = rows.loc[s]
            ci = f"[{r['lo']:+.4f}, {r['hi']:+.4f}]" if np.isfinite(r["lo"]) else "no interval"
            parts.append(f"{name} {r['gain']:+.4f} {ci} ({r['call']})")
        lead = (
            f"{'At ' + where + ': h' if where else 'H'}eadline ({robustness.contrast_label(kind, ks, base_k)}; "
            f'`[report] contrast = "{kind}"`, fixed before the runs; gains > 0 are better, student {metric}, '
            f"{level:.0%} CIs; {procedure.sentence(level, tested)}): " + "; ".join(parts) + "."
        )
        out.append(lead)
        if not fails.empty and fails["failed"].sum() > 0:
            rates = ", ".join(
                f"k={int(f['k'])} {int(f['failed'])}/{int(f['runs'])} "
                f"({f['rate']:.0%}, [{f['rate_lo']:.0%}, {f['rate_hi']:.0%}])"
                for _, f in fails.iterrows()
            )
            fr = rows.loc[robustness.FAIL] if robustness.FAIL in rows.index else None
            trend = (
                f"; their trend over k (randomisation test within student seeds) changes the rate by "
                f"{-fr['gain'] * 100:+.1f} percentage points at k={max(ks)}, p = {fr['p']:.2g} ({fr['call']})"
                if fr is not None
                else ""
            )
            out.append(f"Failed runs per k ({level:.0%} Wilson intervals): {rates}{trend}.")
        else:
            out.append("No run failed (none predicts one class or lies far below the others).")
        calls = rows["call"].to_dict()
        rarer = calls.get(robustness.FAIL) == "better"
        worst = calls.get("worst_m") == "better"
        if rarer and worst:
            words = "More teachers made failed runs rarer and made the worst case of the other runs better."
        elif rarer:
            words = (
                "More teachers made failed runs rarer; the worst case of the other runs did not change "
                "beyond the noise."
            )
        elif worst:
            words = "More teachers made the worst case better" + (
                "; failed runs did not become rarer beyond chance." if robustness.FAIL in calls else "."
            )
        elif "worse" in calls.values():
            shown = ", ".join(_NAMES.get(s, "failed runs") for s, c in calls.items() if c == "worse")
            words = f"More teachers made things worse: {shown}."
        elif all(c == TOO_SMALL for c in calls.values()):
            words = f"This design ({design}) is too small to tell: no interval is narrower than the scores' own range."
        else:
            mde = rows.loc["worst_m", "mde"] if "worst_m" in rows.index else float("nan")
            words = (
                "Neither: more teachers made neither failed runs rarer nor the worst case better beyond the noise"
                + (
                    f" (this design detects a worst-case gain of {mde:.4f} with {POWER:.0%} power)."
                    if np.isfinite(mde)
                    else "."
                )
            )
            if any(c == "better" for c in calls.values()):
                shown = ", ".join(_NAMES[s] for s, c in calls.items() if c == "better" and s in _NAMES)
                words += f" The {shown} improved."
        out.append(words)
    return " ".join(out)
