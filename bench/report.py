"""``bench report``: tables and figures of a sweep, derived from its records only.

Writes into reports/<sweep>/: jobs.csv, by_combination.csv, summary_by_k.csv, budget.csv,
teachers.csv, by_k.png/.pdf, budget.png/.pdf and report.md linking them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.aggregate import budget, by_combination, jobs_frame, scores_by_grid, summary_by_k
from bench.plan import Plan, grid_points
from bench.records import atomic_write_bytes, load_records
from bench.tasks import LOWER_IS_BETTER
from bench.teachers import load_meta, teacher_done


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub-flavoured markdown table of a DataFrame (no extra dependency)."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def teachers_frame(plan: Plan) -> pd.DataFrame:
    """One row per stored teacher of the plan: index, seed, dev score, timings, device."""
    rows = []
    for t in plan.teachers:
        if not teacher_done(plan.sweep.paths.teachers, plan.sweep.task.name, t.key):
            continue
        m = load_meta(plan.sweep.paths.teachers, plan.sweep.task.name, t.key)
        rows.append({"index": t.index, "key": t.key, "seed": m["seed"], "score": m["score"],
                     "metric": m["metric"], "n_params": m.get("n_params"), "device": m["device"],
                     **{f"{split}_{name}": v for split, values in m["scores"].items() for name, v in values.items()},
                     **{f"t_{k}": v for k, v in m["timings"].items()}})
    return pd.DataFrame(rows)


def _save_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, df.to_csv(index=False, float_format="%.6g").encode())


def _metric_label(record: dict) -> str:
    """The headline score's split and metric, e.g. 'dev mcc' (records before score_split: dev)."""
    return f"{record.get('score_split', 'dev')} {record['metric']}"


def _figure(table: pd.DataFrame, grid: list[str], points: list[dict], draw, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(points)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.8 * cols, 4.3 * rows), squeeze=False)
    for ax, point in zip(axes.flat, points):
        sub = table
        for g, v in point.items():
            sub = sub[sub[g] == v]
        title = ", ".join(f"{g}={v:g}" for g, v in point.items()) or None
        if sub.empty:
            ax.set_axis_off()
            ax.set_title(f"{title}: no results yet")
            continue
        draw(sub, metric=metric, title=title, ax=ax)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    for ext in ("png", "pdf"):
        tmp = out.with_suffix(f".tmp.{ext}")
        fig.savefig(tmp, dpi=130)
        tmp.replace(out.with_suffix(f".{ext}"))
    plt.close(fig)


def _teachers_vs_students(jobs: pd.DataFrame, teachers: pd.DataFrame, grid: list[str], out: Path) -> list[str]:
    """Every metric per grid point, students (mean over runs) next to the teachers (mean over the
    N), with parameter counts: the shape of Gholami & Omar's Tables 3-4."""
    table = scores_by_grid(jobs, grid)
    ok = jobs[jobs["status"] == "ok"]
    table.insert(len(grid), "model", "student")
    if "n_params" in ok:
        table["n_params"] = ok["n_params"].iloc[0]
    if not teachers.empty:
        cols = [c for c in table.columns if c in teachers.columns and c not in ("n_runs",)]
        row = {"model": f"teachers (mean of {len(teachers)})", **teachers[cols].mean(numeric_only=True).to_dict(),
               "n_runs": len(teachers), "n_params": teachers["n_params"].iloc[0]}
        table = pd.concat([pd.DataFrame([row]), table], ignore_index=True)[table.columns]
    _save_csv(table, out / "scores_by_grid.csv")
    return ["## Teachers vs students, every metric", "",
            "Students: mean over all their runs (every k) at each grid point; teachers: mean over the N.", "",
            markdown_table(table), ""]


def write_report(plan: Plan) -> Path:
    """Build every table and figure of the sweep from its records; returns the report folder."""
    from bench.plots import plot_budget, plot_by_k

    sweep = plan.sweep
    out = sweep.reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    grid = sorted(sweep.grid)
    planned = {j.key for j in plan.jobs}
    records = [r for k, r in load_records(sweep.results_dir()).items() if k in planned]
    jobs = jobs_frame(records, grid)
    teachers = teachers_frame(plan)
    _save_csv(jobs, out / "jobs.csv")
    _save_csv(teachers, out / "teachers.csv")
    n_ok = int((jobs["status"] == "ok").sum()) if not jobs.empty else 0
    n_skipped = int((jobs["status"] == "skipped").sum()) if not jobs.empty else 0
    lines = [f"# Sweep `{sweep.name}`", "",
             f"Task `{sweep.task.name}`, method `{sweep.method.name}` "
             f"({', '.join(f'{k}={v:g}' for k, v in sweep.method.params.items())}), "
             f"N={sweep.teachers} teachers (`{sweep.teacher.model}`), students `{sweep.student.model}`, "
             f"k in {list(sweep.k)}, r={sweep.repeats} repeats"
             + (f", grid {dict(sweep.grid)}" if grid else "") + ".", "",
             f"Runs recorded: {n_ok} ok, {n_skipped} not run (a teacher failed), {len(jobs) - n_ok - n_skipped} failed, "
             f"{len(planned) - len(jobs)} missing "
             f"of {len(planned)} planned."
             + (f" Scores: student {_metric_label(records[0])}." if records else ""), ""]
    if not teachers.empty:
        lines += ["## Teachers", "", markdown_table(teachers.drop(columns=["key"])), ""]
    if n_ok:
        metric = _metric_label(records[0])
        comb = by_combination(jobs, grid)
        higher = records[0]["metric"] not in LOWER_IS_BETTER
        summary = summary_by_k(comb, grid, higher)
        tsec = {} if teachers.empty else dict(zip(
            teachers["key"], teachers["t_train"] + teachers["t_eval"] + teachers["t_cache"]))
        complete = all(k in tsec for keys in jobs["teacher_keys"] for k in keys.split(","))
        _save_csv(comb, out / "by_combination.csv")
        _save_csv(summary, out / "summary_by_k.csv")
        points = grid_points(sweep)
        _figure(summary, grid, points, plot_by_k, metric, out / "by_k")
        lines += ["## Worst / best case per k", "",
                  "Per combination: min / max / mean over its runs; per k: the mean of those over the "
                  "combinations, and their std over combinations (ddof=0).", "",
                  markdown_table(summary), "", "![by k](by_k.png) ([PDF](by_k.pdf))", ""]
        if complete:
            bud = budget(jobs, tsec, grid, higher)
            _save_csv(bud, out / "budget.csv")
            _figure(bud, grid, points, plot_budget, metric, out / "budget")
            lines += ["## Against compute", "",
                      "compute_seconds = the student's own job (setup + train + eval) + its k teachers' "
                      "fine-tuning, evaluation and output caching (train + eval + cache; their one-time "
                      "data loading is left out), averaged over combinations.", "",
                      markdown_table(bud[[*grid, "k", "compute_seconds", "teacher_seconds", "student_seconds",
                                          "worst", "best", "mean"]]),
                      "", "![budget](budget.png) ([PDF](budget.pdf))", ""]
        lines += _teachers_vs_students(jobs, teachers, grid, out)
    tables = [n for n in ("jobs.csv", "by_combination.csv", "summary_by_k.csv", "budget.csv", "scores_by_grid.csv",
                          "teachers.csv")
              if (out / n).exists()]
    lines += ["Tables: " + ", ".join(f"[{n}]({n})" for n in tables) + ".", ""]
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())
    return out
