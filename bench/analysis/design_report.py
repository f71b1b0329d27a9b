"""The report's account of an adaptive design (results/<sweep>/design.json, written by
``bench.study.adaptive``): why it stopped, the jobs run of the full plan, what the full design
would have cost, every look, and the verdict read from the sequential interval."""

from __future__ import annotations

import pandas as pd

from bench.analysis.sequential import reading
from bench.core.files import read_json
from bench.core.records import DESIGN_FILE

WHY = {
    "effect": "the sequential interval of the contrast excludes 0",
    "precise": "the sequential interval is narrower than the tolerance",
    "budget": "the next batch would pass the budget",
    "complete": "every batch of the plan has run",
    None: "it has not finished (a run is going or was interrupted)",
}


def read_design(sweep) -> dict | None:
    """design.json of an adaptive sweep, or None (a full design, or not run yet)."""
    path = sweep.results_dir() / DESIGN_FILE
    if sweep.design.kind != "adaptive" or not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _where(point: dict, grid: list[str]) -> str:
    return ", ".join(f"{g}={point[g]:g}" for g in grid if g in point)


def sequential_sentence(state: dict, grid: list[str]) -> str:
    """The verdict from the last look's sequential interval (valid whatever made the design stop)."""
    if not state["looks"]:
        return "Adaptive design: no look yet, so no sequential verdict."
    last = state["looks"][-1]
    level = 1 - last["alpha"] if last["alpha"] > 0 else float("nan")
    parts = []
    for p in last["points"]:
        where = _where(p, grid)
        if reading(p) == "untestable":
            parts.append(
                f"{where + ': ' if where else ''}no interval (too few residual degrees of freedom, or no variation)"
            )
            continue
        parts.append(
            f"{where + ': ' if where else ''}gain {p['estimate']:+.4f}, {level:.2%} interval "
            f"[{p['lo']:+.4f}, {p['hi']:+.4f}], {reading(p)}"
        )
    return (
        f"**Adaptive design verdict** (k={state['k']} vs k={state['base_k']}, size-matched {state['statistic']}, "
        f"error {state['error']:g} held over all {state['looks_planned']} planned looks, so under any stopping): "
        + "; ".join(parts)
        + ". The fixed-level intervals below treat the runs as a design fixed in advance; read the "
        "sequential one for the decision."
    )


def design_section(state: dict, grid: list[str]) -> list[tuple]:
    """The "Adaptive design" section: why it stopped, jobs and seconds against the full plan, looks."""
    full = state.get("projected_full_seconds")
    share = state["jobs_run"] / state["jobs_full"] if state["jobs_full"] else float("nan")
    text = (
        f"Stopped after {len(state['looks'])} of {state['looks_planned']} planned looks because "
        f"{WHY.get(state['stopped'], state['stopped'])}. It ran {state['jobs_run']} of the full plan's "
        f"{state['jobs_full']} student jobs ({share:.0%}), {state['student_seconds']:.0f} student seconds"
        + (
            f"; the full design would have cost about {full:.0f} student seconds (the mean job seconds "
            "measured at each k times the plan's jobs at that k)."
            if full is not None
            else "."
        )
        + " Batches follow a balanced order (docs/statistics.md section 9): each look holds about the same "
        "share of every k's cells, each cell with every student seed."
    )
    rows = []
    for look in state["looks"]:
        for p in look["points"]:
            rows.append(
                {
                    "look": look["look"],
                    **{g: p[g] for g in grid if g in p},
                    "jobs": look["jobs"],
                    "error spent": f"{look['alpha']:.4g}" if look["alpha"] > 0 else "none (cannot decide)",
                    "gain": f"{p['estimate']:+.4f}" if p["estimate"] == p["estimate"] else "-",
                    "interval": f"[{p['lo']:+.4f}, {p['hi']:+.4f}]" if p["lo"] == p["lo"] else "-",
                    "decision": look["decision"] or "continue",
                }
            )
    return (
        [("h2", "Adaptive design"), ("p", text), ("table", pd.DataFrame(rows))]
        if rows
        else [
            ("h2", "Adaptive design"),
            ("p", text),
        ]
    )
