"""``bench report``: tables and figures of a sweep, derived from its records only.

Writes into reports/<sweep>/: jobs.csv, by_combination.csv, summary_by_k.csv (the paper's
aggregation), robust_by_k.csv and compare_k.csv (size-matched statistics, the paper's
single-teacher comparison, calibrated contrasts of k against one teacher), headline.csv and
failures_by_k.csv (the verdict's contrast over every k, failed runs per k), budget.csv and
expected_budget.csv (against compute, under a teacher cost policy), scores_by_grid.csv,
teachers.csv, the figures (PNG and PDF), and report.md and a self-contained report.html saying
the same. Nothing is random, so the same records give the same report, byte for byte.
"""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.aggregate import budget, by_combination, jobs_frame, scores_by_grid, summary_by_k
from bench.analysis.design_report import design_section, read_design, sequential_sentence
from bench.analysis.document import to_html, to_markdown
from bench.analysis.plots import plot_budget, plot_by_k, plot_expected_budget, plot_robust_by_k
from bench.analysis.robustness import verdict_tables
from bench.analysis.stats import (
    POWER,
    cells,
    charged_teacher_seconds,
    degenerate_notes,
    expected_by_budget,
    robust_tables,
)
from bench.analysis.verdict import sweep_verdict
from bench.core.config import Sweep
from bench.core.energy import PowerModel
from bench.core.errors import UserError
from bench.core.files import atomic_write_bytes, folder_lock, read_json, remove_stale_temps
from bench.core.records import load_records, scan_records, teacher_meta_problem
from bench.driver.run import lock_holder
from bench.plan.jobs import Plan, grid_points
from bench.tasks.table import LOWER_IS_BETTER, TASKS
from bench.training.teachers import teacher_dir, teacher_done

log = logging.getLogger(__name__)


def teachers_frame(plan: Plan, problems: list[str] | None = None) -> pd.DataFrame:
    """One row per stored teacher of the plan: index, seed, dev score, timings, device. A teacher
    whose meta.json cannot be read or lacks what the report reads is left out, and named in
    ``problems``."""
    rows = []
    for t in plan.teachers:
        if not teacher_done(plan.sweep.paths.teachers, plan.sweep.task.name, t.key):
            continue
        path = teacher_dir(plan.sweep.paths.teachers, plan.sweep.task.name, t.key) / "meta.json"
        try:
            m = read_json(path)
            problem = teacher_meta_problem(m, t.key)
        except (OSError, ValueError) as e:
            problem = f"meta.json unreadable ({e})"
        if problem is not None:
            if problems is not None:
                problems.append(
                    f"teacher {t.index} ({t.key}): {problem}; left out of the teachers' table and of "
                    "the compute figures (a `bench run` that needs it trains it again)"
                )
            continue
        rows.append(
            {
                "index": t.index,
                "key": t.key,
                "seed": m["seed"],
                "score": m["score"],
                "metric": m["metric"],
                "n_params": m.get("n_params"),
                "device": m.get("device"),
                **{f"{split}_{name}": v for split, values in m["scores"].items() for name, v in values.items()},
                **{f"t_{k}": v for k, v in m["timings"].items()},
                "energy_kwh": (m.get("energy") or {}).get("kwh"),  # teachers before energy was measured: None
                "energy_source": (m.get("energy") or {}).get("source"),
            }
        )
    return pd.DataFrame(rows)


def planned_records(plan: Plan) -> list[dict]:
    """The sweep's sound records of jobs in its current plan (records of an older config are left
    out, damaged ones skipped with a warning naming them)."""
    planned = {j.key for j in plan.jobs}
    return [r for k, r in load_records(plan.sweep.results_dir(), jobs=plan.jobs).items() if k in planned]


class _Outputs:
    """The files one report writes into its folder, so that a file an earlier report wrote and
    this one does not (a figure whose data are gone) is removed rather than left beside it."""

    TABLES = (
        "jobs.csv",
        "coverage.csv",
        "by_combination.csv",
        "summary_by_k.csv",
        "robust_by_k.csv",
        "compare_k.csv",
        "headline.csv",
        "failures_by_k.csv",
        "variance_components.csv",
        "model_checks.csv",
        "budget.csv",
        "expected_budget.csv",
        "scores_by_grid.csv",
        "teachers.csv",
    )
    FIGURES = ("by_k", "robust_by_k", "budget", "expected_budget")

    def __init__(self, folder: Path):
        self.folder = folder
        self.written: set[str] = set()
        self.terminal: list[str] = []  # what ``bench report`` prints besides the paths

    def write(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.folder / name, data)
        self.written.add(name)

    def remove_others(self) -> None:
        for name in (*self.TABLES, *(f"{f}.{e}" for f in self.FIGURES for e in ("png", "pdf"))):
            if name not in self.written:
                (self.folder / name).unlink(missing_ok=True)


def _save_csv(df: pd.DataFrame, path: Path, outputs: _Outputs | None = None) -> None:
    data = df.to_csv(index=False, float_format="%.6g").encode()
    if outputs is not None:
        outputs.write(path.name, data)
    else:
        atomic_write_bytes(path, data)


def _param_text(value: Any) -> str:
    """A method parameter as the report prints it: numbers short, lists as lists."""
    return str(list(value)) if isinstance(value, (list, tuple)) else f"{value:g}"


def other_names(task: str, columns: list[str]) -> dict[str, str]:
    """``<split>_<metric>`` score column -> the same score's name in another tool, e.g.
    ``lambada_accuracy`` -> ``lambada_openai/acc`` (lm-evaluation-harness). The task's own
    ``TaskInfo.other_names`` (what records carry as ``other_names``) is given the column names in
    place of the scores, so the renaming is stated once, in the task."""
    info = TASKS.get(task)
    if info is None or info.other_names is None:
        return {}
    scores: dict[str, dict[str, str]] = {}
    for column in columns:
        split, _, metric = column.partition("_")
        scores.setdefault(split, {})[metric] = column
    return {
        column: f"{tool_task}/{theirs}"
        for tool_task, names in info.other_names(scores).items()
        for theirs, column in names.items()
    }


def _metric_label(record: dict) -> str:
    """The headline score's split and metric, e.g. 'dev mcc' (records before score_split: dev),
    with its lm-eval name when it has one ('lambada accuracy (lm-eval: lambada_openai/acc)')."""
    split, metric = record.get("score_split", "dev"), record["metric"]
    task = record.get("config", {}).get("task", {}).get("name", "")
    theirs = other_names(task, [f"{split}_{metric}"])
    return f"{split} {metric}" + "".join(f" (lm-eval: {name})" for name in theirs.values())


def _figure(
    table: pd.DataFrame,
    grid: list[str],
    points: list[dict],
    draw,
    metric: str,
    out: Path,
    extra: dict[str, pd.DataFrame] | None = None,
    outputs: _Outputs | None = None,
) -> None:
    """One panel per grid point: ``draw(rows of the point, metric=, title=, ax=, **extra rows)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def at(frame: pd.DataFrame, point: dict) -> pd.DataFrame:
        for g, v in point.items():
            frame = frame[frame[g] == v]
        return frame

    n = len(points)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.8 * cols, 5.0 * rows), squeeze=False)
    for ax, point in zip(axes.flat, points):
        sub = at(table, point)
        title = ", ".join(f"{g}={v:g}" for g, v in point.items()) or None
        if sub.empty:
            ax.set_axis_off()
            ax.set_title(f"{title}: no results yet")
            continue
        draw(sub, metric=metric, title=title, ax=ax, **{name: at(t, point) for name, t in (extra or {}).items()})
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, out, outputs)


def save_figure(fig, out: Path, outputs: _Outputs | None = None) -> None:
    """Write ``out``.png and .pdf atomically (rendered in memory, written through a temp file of
    this process: two reports at once never share a temporary name), without creation dates
    (same input, same bytes)."""
    import matplotlib.pyplot as plt

    try:
        for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
            buf = io.BytesIO()
            fig.savefig(buf, dpi=130, format=ext, metadata=meta, bbox_inches="tight")
            name = out.with_suffix(f".{ext}")
            if outputs is not None:
                outputs.write(name.name, buf.getvalue())
            else:
                atomic_write_bytes(name, buf.getvalue())
    finally:
        plt.close(fig)


def _teachers_vs_students(
    jobs: pd.DataFrame,
    teachers: pd.DataFrame,
    grid: list[str],
    out: Path,
    outputs: _Outputs | None = None,
    task: str = "",
) -> list[tuple]:
    """Every metric per grid point, students (mean over runs) next to the teachers (mean over the
    N), with parameter counts: the shape of Gholami & Omar's Tables 3-4; a line gives the columns'
    names in other tools (LM: lm-evaluation-harness's), as records carry them in ``other_names``."""
    table = scores_by_grid(jobs, grid)
    ok = jobs[jobs["status"] == "ok"]
    table.insert(len(grid), "model", "student")
    if "n_params" in ok:
        table["n_params"] = ok["n_params"].iloc[0]
    if not teachers.empty:
        cols = [c for c in table.columns if c in teachers.columns and c not in ("n_runs",)]
        row = {
            "model": f"teachers (mean of {len(teachers)})",
            **teachers[cols].mean(numeric_only=True).to_dict(),
            "n_runs": len(teachers),
            "n_params": teachers["n_params"].iloc[0],
        }
        table = pd.concat([pd.DataFrame([row]), table], ignore_index=True)[table.columns]
    _save_csv(table, out / "scores_by_grid.csv", outputs)
    theirs = other_names(task, [str(c) for c in table.columns])
    return [
        ("h2", "Teachers vs students, every metric"),
        ("p", "Students: mean over all their runs (every k) at each grid point; teachers: mean over the N."),
        ("table", table),
        *(
            [("p", "lm-eval's names of these scores: " + "; ".join(f"{c} = {n}" for c, n in theirs.items()) + ".")]
            if theirs
            else []
        ),
    ]


@dataclass(frozen=True)
class ReportOptions:
    """Choices of the robust statistics (``bench report`` flags)."""

    teacher_cost: str = "full"  # full | amortised | free: what a student is charged for its teachers
    m: int | None = None  # runs per size-matched worst / best case; None: the repeats r
    level: float = 0.95  # confidence level of every interval
    base_k: int = 1  # k compared against


@dataclass(frozen=True)
class ReportContext:
    """What every section of one sweep's report reads, built once by ``_write_report``: the sweep,
    its runs and teachers tables, the grid axes and points, the options, the headline metric's
    label and direction, the output folder and the record of what was written there."""

    sweep: Sweep
    jobs: pd.DataFrame
    teachers: pd.DataFrame
    grid: list[str]
    points: list[dict]
    options: ReportOptions
    metric: str
    higher: bool
    out: Path
    outputs: _Outputs


def check_m(options: ReportOptions, repeats: int) -> None:
    """--m must fit in one cell: at most the repeats r."""
    if options.m is not None and options.m > repeats:
        raise UserError(f"--m: expected at most r={repeats} (the runs of one combination and primary), got {options.m}")


def _with_ci(value: float, lo: float, hi: float) -> str:
    """ "+0.0012 [-0.0030, 0.0054]"; the value alone where no interval exists."""
    if not math.isfinite(value):
        return ""
    return f"{value:+.4f}" + ("" if not math.isfinite(lo) else f" [{lo:+.4f}, {hi:+.4f}]")


def side_by_side(paper: pd.DataFrame, robust: pd.DataFrame, grid: list[str], level: float, base_k: int) -> pd.DataFrame:
    """Per (grid point, k): the paper's worst / best next to the size-matched ones, and each
    size-matched statistic's change against base_k with its calibrated interval; the table a
    reader compares across k."""
    merged = paper.merge(robust, on=[*grid, "k"], suffixes=("", "_r"))
    m = int(robust["m"].iloc[0])
    vs = f"vs k={base_k} ({level:.0%} CI)"
    out = merged[[*grid, "k"]].copy()
    for stat in ("worst", "best"):
        out[f"{stat} (paper)"] = merged[stat]
        out[f"{stat} (m={m})"] = merged[f"{stat}_m"]
        out[f"{stat} {vs}"] = [_with_ci(*v) for v in zip(*(merged[f"d_{stat}_m{s}"] for s in ("", "_lo", "_hi")))]
    out["mean"] = merged["mean_r"]
    out[f"mean {vs}"] = [_with_ci(*v) for v in zip(*(merged[f"d_mean{s}"] for s in ("", "_lo", "_hi")))]
    out["IQM"] = merged["iqm"]
    out["combinations"] = merged["n_combinations_r"]
    out["runs"] = merged["n_runs_r"]
    return out


def contrasts_table(comparison: pd.DataFrame, grid: list[str], level: float) -> pd.DataFrame:
    """The comparison table as a reader wants it: per (grid point, k) each statistic's gain over
    the base k with its interval and p-value, the df, the minimum detectable worst-case change
    and the combinations on each side (every column in compare_k.csv)."""
    out = comparison[[*grid, "k"]].copy()
    for stat, name in (("worst_m", "worst"), ("best_m", "best"), ("mean", "mean")):
        out[f"{name} gain ({level:.0%} CI)"] = [
            _with_ci(*v) for v in zip(*(comparison[f"gain_{stat}{s}"] for s in ("", "_lo", "_hi")))
        ]
        out[f"{name} p"] = comparison[f"p_{stat}"]
    out["df"] = [f"{d:.1f}" for d in comparison["df"]]
    out["worst: smallest detectable"] = comparison["mde_worst_m"]
    out["combinations (k / base)"] = [f"{a} / {b}" for a, b in zip(comparison["n_k"], comparison["n_base"])]
    return out


def paper_comparison(paper: pd.DataFrame, robust: pd.DataFrame, grid: list[str], level: float) -> pd.DataFrame:
    """Per (grid point, k): Ilichev et al.'s single- vs multi-teacher comparison (section 5.2),
    as the paper computes it (min / max over a combination's runs against the min / max over
    its members' k=1 runs pooled, k*r runs) and size-matched (each side the expected worst /
    best of m runs of one cell), with the gaps multi - single. In a full design the
    size-matched gap is the contrast of k against k=1, and its interval is that contrast's."""
    merged = paper.merge(robust, on=[*grid, "k"], suffixes=("", "_r"))
    m = int(robust["m"].iloc[0])
    out = merged[[*grid, "k"]].copy()
    for stat in ("worst", "best"):
        multi, single = merged[stat], merged[f"single_{stat}"]
        out[f"{stat}: multi (paper)"] = multi
        out[f"{stat}: single pooled (paper)"] = single
        out[f"{stat}: gap (paper)"] = multi - single
        gap = merged[f"{stat}_m"] - merged[f"single_{stat}_m"]
        same = (gap - merged[f"d_{stat}_m"]).abs() < 1e-9
        out[f"{stat}: gap (m={m}, {level:.0%} CI)"] = [
            _with_ci(g, lo if ok else float("nan"), hi if ok else float("nan"))
            if k != 1
            else _with_ci(g, *(float("nan"),) * 2)
            for g, lo, hi, ok, k in zip(gap, merged[f"d_{stat}_m_lo"], merged[f"d_{stat}_m_hi"], same, merged["k"])
        ]
    return out


FIDELITY_TARGET = 0.99  # gradient cosine of the LM cache's KD term against the exact one


def gap_notes(jobs: pd.DataFrame, grid: list[str], robust: pd.DataFrame, higher: bool, n_diverged: int) -> list[str]:
    """Sentences naming what the statistics leave out or rest on: diverged runs (no score;
    leaving them out flatters the worst case), cells with fewer than m ok runs, and LM runs whose
    cached teacher target gave a KD gradient with cosine below FIDELITY_TARGET to the exact one."""

    notes = []
    if "cache_grad_cosine" in jobs:
        low = jobs[jobs["cache_grad_cosine"] < FIDELITY_TARGET]
        if len(low):
            worst = low.loc[low["cache_grad_cosine"].idxmin()]
            where = ", ".join(f"{g}={worst[g]:g}" for g in grid)
            notes.append(
                f"in {len(low)} run(s) the teachers' top-K cache gives a KD gradient with cosine below "
                f"{FIDELITY_TARGET} to the exact one (lowest {worst['cache_grad_cosine']:.3f} at k={worst['k']}"
                + (f", {where}" if where else "")
                + "); those runs distil an approximate target: raise "
                "task.teacher_topk (docs/lm.md)"
            )
    if n_diverged:
        notes.append(
            f"{n_diverged} run(s) diverged and have no score; they are left out, which flatters the worst case"
        )
    if not robust.empty:
        c = cells(jobs, grid, int(robust["m"].iloc[0]), higher)
        short = c[~c["complete"]]
        if len(short):
            per_k = _names(
                [
                    f"{n} at k={k} ("
                    + ", ".join(
                        f"{row['combination']}"
                        + (f" primary {row['primary']}" if row["primary"] >= 0 else "")
                        + "".join(f" {g}={row[g]:g}" for g in grid)
                        + f": {row['n_runs']} ok"
                        for _, row in at.iterrows()
                    )
                    + ")"
                    for k, at in short.groupby("k")
                    for n in [len(at)]
                ]
            )
            notes.append(
                f"{len(short)} cell(s) have fewer than m={int(robust['m'].iloc[0])} ok runs and are left out ({per_k})"
            )
    return notes


_LIST_AT_MOST = 12  # named items per gap sentence; coverage.csv lists every one


def _names(items: list[str]) -> str:
    """Items joined, at most _LIST_AT_MOST of them and how many more."""
    more = len(items) - _LIST_AT_MOST
    return "; ".join(items[:_LIST_AT_MOST]) + (f"; and {more} more (coverage.csv lists every one)" if more > 0 else "")


def _where(grid: list[str], values) -> str:
    return ", ".join(f"{g}={v:g}" for g, v in zip(grid, values))


def coverage(plan: Plan, records: dict[str, dict], damaged: set[str]) -> pd.DataFrame:
    """Per planned cell (grid point, k, combination, primary): runs planned, and how many are ok,
    diverged, failed, skipped (not run: a teacher failed), damaged (a record file that is not a
    sound record) and missing (no record: not run yet, or still running)."""
    grid = sorted(plan.sweep.grid)
    states = ("ok", "diverged", "failed", "skipped", "damaged", "missing")
    rows: dict[tuple, dict] = {}
    for j in plan.jobs:
        cell = (*(j.grid[g] for g in grid), j.k, "-".join(map(str, j.combination)), j.primary)
        row = rows.setdefault(cell, {"planned": 0, **dict.fromkeys(states, 0)})
        row["planned"] += 1
        rec = records.get(j.key)
        row[rec["status"] if rec else "damaged" if j.key in damaged else "missing"] += 1
    out = pd.DataFrame(
        [{**dict(zip([*grid, "k", "combination", "primary"], cell)), **row} for cell, row in rows.items()]
    )
    if not out.empty:
        out["primary"] = out["primary"].astype("Int64")
    return out


def coverage_by_k(cov: pd.DataFrame, grid: list[str]) -> pd.DataFrame:
    """``coverage`` summed per (grid point, k), as the report shows it."""
    table = (
        cov.groupby([*grid, "k"], sort=True)[["planned", "ok", "diverged", "failed", "skipped", "damaged", "missing"]]
        .sum()
        .reset_index()
    )
    return table.rename(columns={"skipped": "not run (a teacher failed)", "damaged": "damaged record"})


_SKIPPED_CAUSE = re.compile(r"not run: (\S+) ([0-9a-f]{8,}) failed: (.*)")


def coverage_notes(
    plan: Plan,
    cov: pd.DataFrame,
    records: dict[str, dict],
    damaged: list[tuple[Path, str]],
    teacher_problems: list[str],
    running: str | None,
) -> list[str]:
    """Sentences naming every gap of a partial sweep: that a run is still going, grid points and
    k without an ok run, incomplete combinations (how many runs missing and why), runs not run
    because a teacher failed (naming it and its error), teachers not stored or unreadable, and
    damaged record files."""
    sweep, grid = plan.sweep, sorted(plan.sweep.grid)
    notes = []
    if running:
        notes.append(
            f"A `bench run` of this sweep is running ({running}): this report is a snapshot, and runs "
            "counted missing may still come"
        )
    if cov.empty:
        return notes
    if not records:
        notes.append("No run is recorded yet: no statistic can be computed")
    for point, sub in cov.groupby(grid, sort=True) if grid else [((), cov)]:
        point = point if isinstance(point, tuple) else (point,)
        where = _where(grid, point)
        if records and sub["ok"].sum() == 0 and grid:
            notes.append(f"No ok run at {where}: no statistic at this grid point")
            continue
        for k, at_k in sub.groupby("k", sort=True):
            if records and at_k["ok"].sum() == 0:
                notes.append(f"No ok run at k={k}{', ' + where if where else ''}: no statistic at this k")
    short = cov[cov["ok"] < cov["planned"]]
    if len(short) and records:
        why = ("diverged", "failed", "skipped", "damaged", "missing")
        label = {"skipped": "not run (a teacher failed)", "damaged": "damaged record"}
        items = []
        for _, row in short.iterrows():
            cell = (
                f"combination {row['combination']} at k={row['k']}"
                + (f" (primary {row['primary']})" if pd.notna(row["primary"]) else "")
                + (f", {_where(grid, [row[g] for g in grid])}" if grid else "")
            )
            reasons = ", ".join(f"{row[w]} {label.get(w, w)}" for w in why if row[w])
            items.append(f"{cell}: {row['ok']} of {row['planned']} runs ok ({reasons})")
        notes.append(
            f"{len(short)} of {len(cov)} planned cells (combination and primary, their r runs) are "
            f"incomplete: " + _names(items)
        )
    index = {t.key: t.index for t in plan.teachers}
    causes: dict[tuple, int] = {}
    for rec in records.values():
        match = _SKIPPED_CAUSE.match(rec.get("error") or "") if rec["status"] == "skipped" else None
        if match:
            kind, key, error = match.groups()
            cause = (kind, key, error.splitlines()[0][:200])
            causes[cause] = causes.get(cause, 0) + 1
    for (kind, key, error), n in sorted(causes.items()):
        who = f"teacher {index[key]} ({key})" if key in index else f"{kind} {key}"
        notes.append(f"{n} run(s) were not run because {who} failed: {error}; a `bench run` retries it, then them")
    missing_teachers = [t for t in plan.teachers if not teacher_done(sweep.paths.teachers, sweep.task.name, t.key)]
    if missing_teachers and (cov["ok"] < cov["planned"]).any():
        notes.append(
            "teacher(s) not stored (not trained yet, or their training failed): "
            + ", ".join(f"{t.index} ({t.key})" for t in missing_teachers)
        )
    notes += teacher_problems
    if damaged:
        notes.append(
            f"{len(damaged)} record file(s) are damaged and left out (a `bench run` moves them to "
            f"quarantine and runs their jobs again): " + _names([f"{p.name}: {why}" for p, why in damaged])
        )
    return notes


@dataclass(frozen=True)
class Written:
    """A written report: its folder and what ``bench report`` prints of it (``terminal``)."""

    folder: Path
    terminal: str


def write_report(plan: Plan, options: ReportOptions = ReportOptions()) -> Written:
    """Build every table and figure of the sweep from its records; returns the report folder and
    the lines the terminal gets.

    Works on any partial sweep (failed, diverged, skipped or missing runs, a run still going,
    no records at all): statistics are computed where the data allow and every gap is named.
    One report of a sweep at a time (``reports/<sweep>/.lock``; a second one waits); the
    temporaries of killed reports are removed first."""
    check_m(options, plan.sweep.repeats)
    out = plan.sweep.reports_dir()
    with folder_lock(out, "bench report of this sweep"):
        remove_stale_temps(out)
        outputs = _Outputs(out)
        _write_report(plan, options, out, outputs)
        outputs.remove_others()
    return Written(out, "\n".join(outputs.terminal))


def _guarded(what: str, build, blocks: list[tuple]) -> None:
    """Run ``build()`` (which appends to ``blocks``); if it fails on records this code did not
    foresee, the report says so in one paragraph and the rest of it is still written (file
    errors, e.g. a full disk, are not caught: they end the command with one line)."""
    try:
        build()
    except (OSError, UserError):
        raise
    except Exception as e:  # noqa: BLE001 - the report must be written whatever the records hold
        line = f"{what} could not be computed from these records ({type(e).__name__}: {e})"
        log.warning("%s", line)
        blocks.append(("p", f"**{line}.** The coverage above and jobs.csv are complete."))


def _write_report(plan: Plan, options: ReportOptions, out: Path, outputs: _Outputs) -> None:

    sweep = plan.sweep
    grid = sorted(sweep.grid)
    planned = {j.key for j in plan.jobs}
    found, damaged = scan_records(sweep.results_dir(), plan.jobs)
    for p, problem in damaged:
        log.warning("%s: %s; skipped", p, problem)
    by_key = {k: r for k, r in found.items() if k in planned}
    records = [r for j in plan.jobs if (r := by_key.get(j.key)) is not None]
    damaged_keys = {p.name[: -len(".json")] for p, _ in damaged}
    jobs = jobs_frame(records, grid)
    teacher_problems: list[str] = []
    teachers = teachers_frame(plan, teacher_problems)
    cov = coverage(plan, by_key, damaged_keys)
    _save_csv(jobs, out / "jobs.csv", outputs)
    _save_csv(teachers, out / "teachers.csv", outputs)
    _save_csv(cov, out / "coverage.csv", outputs)
    counts = jobs["status"].value_counts().to_dict() if not jobs.empty else {}
    n_ok, n_skipped, n_diverged = (int(counts.get(s, 0)) for s in ("ok", "skipped", "diverged"))
    ok_records = [r for r in records if r["status"] == "ok"]
    n_stale = len(found) - len(by_key)
    blocks: list[tuple] = [
        ("h1", f"Sweep `{sweep.name}`"),
        (
            "p",
            f"Task `{sweep.task.name}`, method `{sweep.method.name}` "
            f"({', '.join(f'{k}={_param_text(v)}' for k, v in sweep.method.params.items())}), "
            f"N={sweep.teachers} teachers (`{sweep.teacher.model}`), students `{sweep.student.model}`, "
            f"k in {list(sweep.k)}, r={sweep.repeats} repeats" + (f", grid {dict(sweep.grid)}" if grid else "") + ". "
            f"Runs recorded: {n_ok} ok, {n_diverged} diverged (no score), {n_skipped} not run (a teacher failed), "
            f"{int(counts.get('failed', 0))} failed, {len(planned) - len(records)} missing of "
            f"{len(planned)} planned"
            + (f" ({len(damaged_keys & planned)} of them with a damaged record)" if damaged_keys & planned else "")
            + "."
            + (f" Scores: student {_metric_label(ok_records[0])}." if ok_records else "")
            + (f" {n_stale} record(s) of another configuration are ignored." if n_stale else ""),
        ),
    ]
    design = read_design(sweep)
    if design is not None:
        blocks += design_section(design, grid)
    gaps = coverage_notes(plan, cov, by_key, damaged, teacher_problems, lock_holder(sweep.results_dir()))
    if gaps or n_ok < len(planned):
        blocks += [
            ("h2", "Coverage"),
            (
                "p",
                "Runs per k (coverage.csv: per combination and primary). Statistics below use the ok runs "
                "only; a cell (combination and primary) with fewer than m ok runs is left out of the "
                "size-matched ones.",
            ),
            ("table", coverage_by_k(cov, grid)),
            *[("p", f"{g}.") for g in gaps],
        ]
    body: list[tuple] = []
    if not teachers.empty:
        body += [("h2", "Teachers"), ("table", teachers.drop(columns=["key"]))]
    if n_ok:
        metric = _metric_label(ok_records[0])
        higher = ok_records[0]["metric"] not in LOWER_IS_BETTER
        ctx = ReportContext(sweep, jobs, teachers, grid, grid_points(sweep), options, metric, higher, out, outputs)
        _guarded(
            "The statistics per k",
            lambda: _statistics(ctx, n_diverged, blocks, body),
            body,
        )
        _guarded(
            "The compute figures",
            lambda: _compute(ctx, body),
            body,
        )
        _guarded(
            "The teachers-vs-students table",
            lambda: body.extend(_teachers_vs_students(jobs, teachers, grid, out, outputs, sweep.task.name)),
            body,
        )
    tables = [n for n in _Outputs.TABLES if n in outputs.written]
    blocks += body + [("p", "Tables: " + ", ".join(f"[{n}]({n})" for n in tables) + ".")]
    atomic_write_bytes(out / "report.md", to_markdown(blocks).encode())
    atomic_write_bytes(out / "report.html", to_html(blocks, out, f"Sweep {sweep.name}").encode())


def _statistics(ctx: ReportContext, n_diverged: int, blocks: list[tuple], body: list[tuple]) -> None:
    """The verdict, the paper's and the size-matched statistics per k, and their figures."""
    sweep, jobs, grid, points, options = ctx.sweep, ctx.jobs, ctx.grid, ctx.points, ctx.options
    metric, higher, out, outputs = ctx.metric, ctx.higher, ctx.out, ctx.outputs
    comb = by_combination(jobs, grid)
    summary = summary_by_k(comb, grid, higher)
    _save_csv(comb, out / "by_combination.csv", outputs)
    _save_csv(summary, out / "summary_by_k.csv", outputs)
    robust, comparison = robust_tables(jobs, grid, options.m, higher, options.base_k, options.level)
    _save_csv(robust, out / "robust_by_k.csv", outputs)
    _save_csv(comparison, out / "compare_k.csv", outputs)
    notes = degenerate_notes(jobs, grid) + gap_notes(jobs, grid, robust, higher, n_diverged)
    m = int(robust["m"].iloc[0]) if not robust.empty else None
    if options.m is None and m is not None and m < sweep.repeats:
        notes.append(
            f"the size-matched statistics take extremes of m={m} runs (the repeats that have an ok run), "
            f"not of r={sweep.repeats}: a partial sweep (set --m to choose)"
        )
    tables = verdict_tables(jobs, sweep.report, grid, options.m, higher, options.base_k, options.level)
    headline, failures = tables.headline, tables.failures
    _save_csv(headline, out / "headline.csv", outputs)
    _save_csv(failures, out / "failures_by_k.csv", outputs)
    _save_csv(tables.components, out / "variance_components.csv", outputs)
    _save_csv(tables.checks, out / "model_checks.csv", outputs)
    outputs.terminal += model_lines(tables.components, tables.checks, grid)
    design = read_design(sweep)
    text = sweep_verdict(sweep, summary, robust, comparison, metric, higher, options.level, notes, headline, failures)
    blocks += [
        ("h2", "Verdict"),
        *([("p", sequential_sentence(design, grid))] if design is not None else []),
        *(("p", paragraph) for paragraph in text.split("\n\n")),
    ]
    _figure(
        summary,
        grid,
        points,
        plot_by_k,
        metric,
        out / "by_k",
        extra={"single": robust} if not robust.empty else None,
        outputs=outputs,
    )
    body += [
        ("h2", "Worst / best case per k"),
        (
            "p",
            "**Paper** (Ilichev et al. 2021): per combination the min / max over all its runs, averaged "
            "over the combinations of each k (with a primary teacher a combination has r*k runs, so these "
            "are extremes of more draws as k grows). **Size-matched** (m runs): per cell (one "
            "combination and primary, its r student seeds) the expected min / max of m of its runs "
            "(exact), averaged over a combination's cells and then over the combinations of each k. "
            f"**vs k={options.base_k}**: the change of each size-matched statistic against k="
            f"{options.base_k} with its {options.level:.0%} interval, from a least-squares fit of the "
            "combinations on k and their teachers' effects (Student t; the one k=N combination borrows "
            "its noise from the spread between combinations at every k; docs/statistics.md, checked by "
            "simulation in benchmarks/calibration.py). For perplexity a negative change is better. "
            "**IQM**: rliable's interquartile mean of the runs at k (no interval).",
        ),
    ]
    if int(failures["failed"].sum()):
        body += [
            ("h2", "Failed runs per k"),
            (
                "p",
                "A run fails when its predictions are one class, its score is past `[report] failure_threshold`, "
                f"or it lies more than {sweep.report.failure_mad:g} robust standard deviations (1.4826 x MAD) "
                f"below the median; rate with its {options.level:.0%} Wilson interval (runs taken as "
                "independent). The headline's worst / best / mean are of the other runs (docs/statistics.md).",
            ),
            ("table", failures),
        ]
    if not robust.empty:
        body += [("table", side_by_side(summary, robust, grid, options.level, options.base_k))]
    else:
        body += [("p", "No size-matched statistic: no cell (combination and primary) has m ok runs yet.")]
    if not comparison.empty:
        _figure(comparison, grid, points, plot_robust_by_k, metric, out / "robust_by_k", outputs=outputs)
        body += [("img", "robust_by_k.png", "size-matched gain of k teachers over the base k")]
    body += [
        ("h2", "Single teacher vs multiple teachers (the paper's comparison)"),
        (
            "p",
            "Per combination, the paper compares the multi-teacher students' min / max with the min / "
            "max over the k=1 runs of its members pooled (k*r runs). Pooling more runs alone lowers the "
            "pooled min and raises the pooled max as k grows, so the paper's gap mixes the effect of "
            "more teachers with the number of runs. Size-matched, both sides are the expected worst / "
            "best of m runs of one cell; the single-teacher side is then the k=1 value at every k, and "
            "the gap is the contrast of k against k=1.",
        ),
    ]
    if not robust.empty:
        body += [("table", paper_comparison(summary, robust, grid, options.level))]
    body += [
        (
            "p",
            "The paper's figure (multi-teacher solid, single-teacher pooled dashed; bands ±1 std over "
            "combinations, none where a k has one combination):",
        ),
        ("img", "by_k.png", "worst / best case per k, paper"),
        ("h2", f"k teachers vs k={options.base_k}: every contrast"),
    ]
    if comparison.empty:
        body += [("p", f"No contrast: it needs cells with m ok runs at k={options.base_k} and at another k.")]
        return
    body += [
        (
            "p",
            "gain = the size-matched statistic at k minus at the base k, turned so that > 0 is better "
            f"(lower perplexity too), with its {options.level:.0%} interval and two-sided p-value; df: of "
            "the worst-case test (Satterthwaite); smallest detectable: the worst-case change this design "
            f"detects with {POWER:.0%} power. Every column, and the repeats that would halve the smallest "
            "detectable change, in compare_k.csv.",
        ),
        ("table", contrasts_table(comparison, grid, options.level)),
    ]
    body += model_section(tables.components, tables.checks, grid, sweep.repeats)


def _point_rows(frame: pd.DataFrame, grid: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(the point in words, its rows) per grid point of ``frame``; one unnamed point without a grid."""
    if frame.empty:
        return []
    if not grid:
        return [("", frame)]
    return [(_where(grid, key if isinstance(key, tuple) else (key,)), g) for key, g in frame.groupby(grid, sort=True)]


def model_section(components: pd.DataFrame, checks: pd.DataFrame, grid: list[str], repeats: int) -> list[tuple]:
    """The report's section on what varies (variance components) and on the checks of what the
    intervals assume (docs/statistics.md, section 3 says how to read them)."""
    if components.empty:
        return []
    out: list[tuple] = [
        ("h2", "What varies, and the model's checks"),
        (
            "p",
            "Variance components of one run's score (moment estimates from the runs that did not fail; share: of "
            "their sum): teacher (a teacher's own quality), combination (a teacher combination's own effect), "
            "primary and cell (with a primary teacher), seed (a student seed's effect shared by every combination), "
            "seed x k and primary x k (an effect that differs between k's: every interval over k includes them), "
            "teacher x seed (a seed's effect that depends on the teachers; in a full design it cancels from the mean's "
            "contrasts) and run "
            "(what is left)."
            + (" With r = 1 the seed's effects cannot be told from the combinations'." if repeats == 1 else ""),
        ),
    ]
    for where, rows in _point_rows(components, grid):
        table = rows.drop(columns=grid)
        out += ([("p", f"At {where}:")] if where else []) + [("table", table)]
    out.append(("p", "What each interval assumes, its check, and what the report did about it:"))
    for where, rows in _point_rows(checks, grid):
        out += ([("p", f"At {where}:")] if where else []) + [("table", rows.drop(columns=grid))]
    return out


def model_lines(components: pd.DataFrame, checks: pd.DataFrame, grid: list[str]) -> list[str]:
    """The variance components and model checks in a few terminal lines."""
    lines = []
    for where, rows in _point_rows(components, grid):
        parts = ", ".join(
            f"{r['component']} {r['sd']:.4f} ({r['share']:.0%})" for _, r in rows.iterrows() if pd.notna(r["share"])
        )
        lines.append(f"variance components{' at ' + where if where else ''} (sd, share): {parts}")
    for where, rows in _point_rows(checks, grid):
        for _, r in rows.iterrows():
            lines.append(f"check{' at ' + where if where else ''}: {r['assumption']}: {r['result']} -> {r['action']}")
    return lines


BUDGET_COLUMNS = ("compute_seconds", "teacher_seconds", "student_seconds", "compute_kwh", "teacher_kwh", "student_kwh")


def energy_sentence(jobs: pd.DataFrame, teachers: pd.DataFrame, model: PowerModel) -> str:
    """What the sweep's stored jobs and teachers used, in kWh and gCO2e, with the sources of the
    figures (measured by a counter or estimated) and the estimate's model."""
    parts = [f for f in (jobs, teachers) if "energy_kwh" in f]
    if not parts:
        return "Energy: no record carries it (written before bench measured energy)."
    frame = pd.concat([f[["energy_kwh", "energy_source"]] for f in parts], ignore_index=True)
    known = frame[frame["energy_kwh"].notna()]
    sources = ", ".join(f"{n} {s}" for s, n in known["energy_source"].value_counts().sort_index().items())
    missing = len(frame) - len(known)
    kwh = known["energy_kwh"].sum()
    return (
        f"Energy: the sweep's {len(known)} stored jobs and teachers used {kwh:.3g} kWh, "
        f"{kwh * model.carbon_intensity:.3g} gCO2e at {model.carbon_intensity:g} gCO2e/kWh "
        f"(`[run.energy]`); sources: "
        f"{sources or 'none'}{f'; {missing} without energy (stored before it was measured)' if missing else ''}. "
        f"nvml and rapl are counters read on the machine; estimate is CPU seconds x {model.watts_per_core:g} W "
        f"per core + memory x {model.watts_per_gib:g} W/GiB (x PUE {model.pue:g}): a model, not a measurement."
    )


def _compute(ctx: ReportContext, body: list[tuple]) -> None:
    """Worst / best case and expected best / worst of n students against compute (when every
    teacher of the ok runs has a readable meta.json with its timings)."""
    sweep, jobs, teachers, grid, points, options = ctx.sweep, ctx.jobs, ctx.teachers, ctx.grid, ctx.points, ctx.options
    metric, higher, out, outputs = ctx.metric, ctx.higher, ctx.out, ctx.outputs
    tsec = (
        {}
        if teachers.empty
        else dict(zip(teachers["key"], teachers["t_train"] + teachers["t_eval"] + teachers.get("t_cache", 0.0)))
    )
    ok = jobs[jobs["status"] == "ok"]
    if not all(k in tsec for keys in ok["teacher_keys"] for k in keys.split(",")):
        body += [
            ("h2", "Against compute"),
            ("p", "Not drawn: a teacher of the ok runs has no readable meta.json with its timings."),
        ]
        return
    policy = options.teacher_cost
    energy = "energy_kwh" in teachers and bool(teachers["energy_kwh"].notna().all())  # teachers stored before: none
    tkwh = dict(zip(teachers["key"], teachers["energy_kwh"])) if energy else {}
    bud = budget(
        jobs,
        charged_teacher_seconds(jobs, tsec, policy),
        grid,
        higher,
        teacher_kwh=charged_teacher_seconds(jobs, tkwh, policy) if energy else None,
    ).assign(policy=policy)
    _save_csv(bud, out / "budget.csv", outputs)
    expected = expected_by_budget(jobs, tsec, grid, policy, higher)
    _save_csv(expected, out / "expected_budget.csv", outputs)
    _figure(bud, grid, points, plot_budget, metric, out / "budget", outputs=outputs)
    _figure(expected, grid, points, plot_expected_budget, metric, out / "expected_budget", outputs=outputs)
    at_r = expected[expected["n"] == sweep.repeats]
    body += [
        ("h2", "Against compute"),
        (
            "p",
            f"Teacher cost policy: **{policy}** (`bench report --teacher-cost full|amortised|free`: "
            "each student charged its k teachers' whole cost, the cost shared by the runs that use "
            "each teacher, or none). A teacher's cost is its fine-tuning, evaluation and output "
            "caching (train + eval + cache); a student's is its job (setup + train + eval). "
            "compute_seconds: per student, averaged over combinations.",
        ),
        ("table", bud[[*grid, "k", *[c for c in BUDGET_COLUMNS if c in bud], "worst", "best", "mean"]]),
        ("p", energy_sentence(jobs, teachers, sweep.run.energy)),
        ("img", "budget.png", "worst / best case against compute"),
        (
            "p",
            f"Expected best and worst of n students drawn from the runs at each k against what they "
            f"cost (Dodge et al. 2019, expected validation performance), n up to the runs at k (no "
            f"extrapolation); n = r = {sweep.repeats} here, every n in expected_budget.csv:",
        ),
        ("table", at_r[[*grid, "k", "n", "compute_seconds", "expected_best", "expected_worst", "mean"]]),
        ("img", "expected_budget.png", "expected best / worst against compute"),
    ]
