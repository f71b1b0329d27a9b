"""``bench run`` of an adaptive design ([design] kind = "adaptive"): batch after batch of the
plan's own jobs (``plan.design.job_batches``) through the driver, a look at the sequential
interval after each (``analysis.sequential``), and a stop with its reason, all in
results/<sweep>/design.json.

It sits above analysis (it reads the verdict) and driver (it runs jobs): neither may import the
other. A rerun walks the same looks over the records already there and runs only what the first
undecided look still lacks, so it continues where the last run stopped (and re-evaluates the
decision, which the same records always give the same way).
"""

from __future__ import annotations

import dataclasses
import json
import logging

from bench.analysis.aggregate import jobs_frame
from bench.analysis.sequential import cell_key, decidable_looks, evaluate_look, look_alphas, over_budget
from bench.core.files import atomic_write_bytes
from bench.core.records import DESIGN_FILE, load_records
from bench.driver.run import RunSummary, run_sweep
from bench.plan.design import cell_of, job_batches
from bench.plan.jobs import DistillJob, Plan
from bench.tasks.table import LOWER_IS_BETTER

log = logging.getLogger(__name__)


def target_k(plan: Plan) -> int:
    """The k compared with k = 1: ``design.k``, or the sweep's largest k."""
    return plan.sweep.design.k or max(plan.sweep.k)


def _records(plan: Plan, jobs: tuple[DistillJob, ...]) -> list[dict]:
    found = load_records(plan.sweep.results_dir(), jobs=jobs)
    return [r for j in jobs if (r := found.get(j.key)) is not None]


def _seconds(plan: Plan, records: list[dict]) -> tuple[float, float]:
    """(student seconds of the ok records, the full plan's projected student seconds: per k the
    mean job seconds measured at k times the plan's jobs at k; NaN for a k not yet measured)."""
    by_k: dict[int, list[float]] = {}
    for r in records:
        if r["status"] == "ok" and r.get("timings"):
            by_k.setdefault(int(r["k"]), []).append(float(r["timings"]["total"]))
    spent = sum(sum(v) for v in by_k.values())
    counts = plan.counts_by_k()
    projected = sum((sum(by_k[k]) / len(by_k[k]) if by_k.get(k) else float("nan")) * n for k, n in counts.items() if n)
    return spent, projected


def _add(a: RunSummary, b: RunSummary) -> RunSummary:
    """The summaries of two successive runs on growing prefixes as one: counts and seconds add up;
    ``already_done`` is what b found recorded less what a recorded (so: recorded before this command)."""
    summed = {f.name: getattr(a, f.name) + getattr(b, f.name) for f in dataclasses.fields(RunSummary)}
    return RunSummary(**{**summed, "already_done": b.already_done - a.jobs_ok - a.jobs_diverged})


def run_adaptive(
    plan: Plan, quiet: bool = False, mixed_threads: bool = False, spec_text: str = "", mixed_numerics: bool = False
) -> tuple[RunSummary, dict]:
    """Run the plan's batches until a look decides, the budget stops it or the plan is done;
    returns the summed run summary and what design.json holds."""
    sweep, design = plan.sweep, plan.sweep.design
    k = target_k(plan)
    grid = sorted(sweep.grid)
    batches = job_batches(plan)
    prefixes = [tuple(job for b in batches[: i + 1] for job in b) for i in range(len(batches))]
    combos = [sorted({cell_key(*cell_of(job))[0] for job in p}) for p in prefixes]
    alphas = look_alphas(design.error, decidable_looks(combos, k))
    total, summary, looks, reason = len(plan.jobs), None, [], "complete"
    done: tuple[DistillJob, ...] = ()
    for j, prefix in enumerate(prefixes):
        if over_budget(len(prefix), total, design.budget):
            reason = "budget"
            break
        ran = run_sweep(
            dataclasses.replace(plan, jobs=prefix),
            quiet,
            False,
            mixed_threads,
            spec_text,
            mixed_numerics=mixed_numerics,
        )
        summary = ran if summary is None else _add(summary, ran)
        done = prefix
        records = _records(plan, prefix)
        ok = [r for r in records if r["status"] == "ok"]
        look = None
        if ok:
            higher = ok[0]["metric"] not in LOWER_IS_BETTER
            look = evaluate_look(
                jobs_frame(records, grid),
                j + 1,
                len(prefix),
                alphas[j],
                k,
                design.statistic,
                design.tolerance,
                higher,
                grid,
                sweep.repeats,
            )
            looks.append(look.to_json())
        state = _state(plan, k, alphas, looks, len(prefix), None, records)
        atomic_write_bytes(sweep.results_dir() / DESIGN_FILE, (json.dumps(state, indent=1) + "\n").encode())
        if look is not None and look.decision:
            reason = look.decision
            break
    records = _records(plan, done)
    state = _state(plan, k, alphas, looks, len(done), reason, records)
    atomic_write_bytes(sweep.results_dir() / DESIGN_FILE, (json.dumps(state, indent=1) + "\n").encode())
    if not quiet:
        log.info(stop_line(state))
    return summary or RunSummary(0, 0, 0, 0, 0, 0, 0, 0.0), state


def _state(
    plan: Plan, k: int, alphas: list[float], looks: list[dict], jobs: int, reason: str | None, records: list[dict]
) -> dict:
    """What design.json holds: the design, every look, why it stopped (None: still running), the
    jobs run of the full plan and the seconds spent against the full plan's projection."""
    d = plan.sweep.design
    spent, projected = _seconds(plan, records)
    return {
        "kind": d.kind,
        "k": k,
        "base_k": 1,
        "statistic": d.statistic,
        "error": d.error,
        "tolerance": d.tolerance,
        "budget": d.budget,
        "looks_planned": len(alphas),
        "alphas": alphas,
        "seed": d.seed,
        "looks": looks,
        "stopped": reason,
        "jobs_run": jobs,
        "jobs_full": len(plan.jobs),
        "student_seconds": spent,
        "projected_full_seconds": None if projected != projected else projected,
    }


def stop_line(state: dict) -> str:
    """One line: why the design stopped, jobs run of the plan, seconds against the full plan's."""
    why = {
        "effect": "the interval excludes 0",
        "precise": "the interval is narrow enough",
        "budget": "the budget is spent",
        "complete": "the plan is complete",
    }.get(state["stopped"], "not finished")
    full = state["projected_full_seconds"]
    return (
        f"adaptive design: stopped after {len(state['looks'])} of {state['looks_planned']} looks ({why}); "
        f"{state['jobs_run']} of {state['jobs_full']} student jobs ({state['jobs_run'] / state['jobs_full']:.0%}), "
        f"{state['student_seconds']:.0f} student seconds"
        + (f" of a projected {full:.0f} for the full plan" if full is not None else "")
    )
