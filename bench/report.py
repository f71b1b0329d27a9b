"""``bench report``: tables and figures of a sweep, derived from its records only.

Writes into reports/<sweep>/: jobs.csv, by_combination.csv, summary_by_k.csv (the paper's
aggregation), robust_by_k.csv and compare_k.csv (size-matched statistics, bootstrap intervals,
tests of k against one teacher), budget.csv and expected_budget.csv (against compute, under a
teacher cost policy), scores_by_grid.csv, teachers.csv, the figures (PNG and PDF), and
report.md and a self-contained report.html saying the same. Bootstrap seeds are fixed, so the
same records give the same report, byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.aggregate import budget, by_combination, jobs_frame, scores_by_grid, summary_by_k
from bench.document import to_html, to_markdown
from bench.plan import Plan, grid_points
from bench.records import atomic_write_bytes, load_records
from bench.tasks import LOWER_IS_BETTER
from bench.teachers import load_meta, teacher_done


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


def planned_records(plan: Plan) -> list[dict]:
    """The sweep's records of jobs in its current plan (records of an older config are left out)."""
    planned = {j.key for j in plan.jobs}
    return [r for k, r in load_records(plan.sweep.results_dir()).items() if k in planned]


def _save_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, df.to_csv(index=False, float_format="%.6g").encode())


def _metric_label(record: dict) -> str:
    """The headline score's split and metric, e.g. 'dev mcc' (records before score_split: dev)."""
    return f"{record.get('score_split', 'dev')} {record['metric']}"


def _figure(table: pd.DataFrame, grid: list[str], points: list[dict], draw, metric: str, out: Path,
            extra: pd.DataFrame | None = None) -> None:
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
        if extra is None:
            draw(sub, metric=metric, title=title, ax=ax)
        else:
            other = extra
            for g, v in point.items():
                other = other[other[g] == v]
            draw(sub, other, metric=metric, title=title, ax=ax)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, out)


def save_figure(fig, out: Path) -> None:
    """Write ``out``.png and .pdf atomically, without creation dates (same input, same bytes)."""
    import matplotlib.pyplot as plt

    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        tmp = out.with_suffix(f".tmp.{ext}")
        fig.savefig(tmp, dpi=130, format=ext, metadata=meta)
        tmp.replace(out.with_suffix(f".{ext}"))
    plt.close(fig)


def _teachers_vs_students(jobs: pd.DataFrame, teachers: pd.DataFrame, grid: list[str], out: Path) -> list[tuple]:
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
    return [("h2", "Teachers vs students, every metric"),
            ("p", "Students: mean over all their runs (every k) at each grid point; teachers: mean over the N."),
            ("table", table)]




@dataclass(frozen=True)
class ReportOptions:
    """Choices of the robust statistics (``bench report`` flags)."""

    teacher_cost: str = "full"  # full | amortised | free: what a student is charged for its teachers
    m: int | None = None  # runs per size-matched worst / best case; None: the repeats r
    n_boot: int = 2000  # bootstrap draws
    level: float = 0.95  # confidence level of every interval
    seed: int = 0  # bootstrap seed (fixed: same records, same report)
    base_k: int = 1  # k compared against


def _ci(lo: float, hi: float) -> str:
    return "" if math.isnan(lo) else f"[{lo:.4f}, {hi:.4f}]"


def side_by_side(paper: pd.DataFrame, robust: pd.DataFrame, grid: list[str], level: float) -> pd.DataFrame:
    """Per (grid point, k): the paper's worst / best next to the size-matched ones and the mean
    and IQM, each with its interval; the table a reader compares across k."""
    merged = paper.merge(robust, on=[*grid, "k"], suffixes=("", "_r"))
    m = int(robust["m"].iloc[0])
    pct = f"{level:.0%} CI"
    out = merged[[*grid, "k"]].copy()
    out["worst (paper)"] = merged["worst"]
    out[f"worst (m={m})"] = merged["worst_m"]
    out[f"worst {pct}"] = [_ci(a, b) for a, b in zip(merged["worst_m_lo"], merged["worst_m_hi"])]
    out["best (paper)"] = merged["best"]
    out[f"best (m={m})"] = merged["best_m"]
    out[f"best {pct}"] = [_ci(a, b) for a, b in zip(merged["best_m_lo"], merged["best_m_hi"])]
    out["mean"] = merged["mean"]
    out[f"mean {pct}"] = [_ci(a, b) for a, b in zip(merged["mean_lo"], merged["mean_hi"])]
    out["IQM"] = merged["iqm"]
    out[f"IQM {pct}"] = [_ci(a, b) for a, b in zip(merged["iqm_lo"], merged["iqm_hi"])]
    out["combinations"] = merged["n_combinations"]
    out["runs"] = merged["n_runs"]
    return out


def verdict(comparison: pd.DataFrame, grid: list[str], metric: str, higher_is_better: bool, level: float) -> str:
    """One paragraph: at the largest k of each grid point, the size-matched worst case against
    the base k, with its interval, test and probability of improvement, in words."""
    if comparison.empty:
        return "No verdict: the sweep has no runs at the base k and at another k to compare."
    sentences = []
    points = [()] if not grid else sorted({tuple(r[g] for g in grid) for _, r in comparison.iterrows()})
    for point in points:
        sub = comparison
        for g, v in zip(grid, point):
            sub = sub[sub[g] == v]
        row = sub.sort_values("k").iloc[-1]
        where = ", ".join(f"{g}={v:g}" for g, v in zip(grid, point))
        better = "higher" if higher_is_better else "lower"
        worse = "lower" if higher_is_better else "higher"
        word = better if row["diff"] > 0 else worse if row["diff"] < 0 else "no different"
        size = f"{abs(row['diff']):.4f} {word}" if row["diff"] != 0 else "no different"
        if row["diff_lo"] > 0:
            reading = "the interval excludes 0: more teachers raised the worst case beyond the seed noise"
        elif row["diff_hi"] < 0:
            reading = "the interval excludes 0: more teachers lowered the worst case beyond the seed noise"
        else:
            reading = "the interval includes 0: no robustness gain beyond the seed noise is shown"
        sentences.append(
            f"{'At ' + where + ', at' if where else 'At'} k={int(row['k'])} the size-matched worst case "
            f"(expected worst of m={int(row['m'])} runs, student {metric}) is {size} than at k={int(row['base_k'])} "
            f"({row['worst_m']:.4f} vs {row['worst_m_base']:.4f}), {level:.0%} CI of the difference "
            f"[{row['diff_lo']:.4f}, {row['diff_hi']:.4f}] (bootstrap over teacher and student seeds); {reading}. "
            f"Mann-Whitney U p = {row['p_mwu']:.3g} over {int(row['n_k'])} vs {int(row['n_base'])} combinations, "
            f"probability of improvement {row['p_improve']:.2f}.")
    return " ".join(sentences)


def write_report(plan: Plan, options: ReportOptions = ReportOptions()) -> Path:
    """Build every table and figure of the sweep from its records; returns the report folder."""
    from bench.plots import plot_budget, plot_by_k, plot_expected_budget, plot_robust_by_k
    from bench.stats import charged_teacher_seconds, expected_by_budget, robust_tables

    sweep = plan.sweep
    out = sweep.reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    grid = sorted(sweep.grid)
    planned = {j.key for j in plan.jobs}
    records = planned_records(plan)
    jobs = jobs_frame(records, grid)
    teachers = teachers_frame(plan)
    _save_csv(jobs, out / "jobs.csv")
    _save_csv(teachers, out / "teachers.csv")
    n_ok = int((jobs["status"] == "ok").sum()) if not jobs.empty else 0
    n_skipped = int((jobs["status"] == "skipped").sum()) if not jobs.empty else 0
    n_diverged = int((jobs["status"] == "diverged").sum()) if not jobs.empty else 0
    blocks: list[tuple] = [
        ("h1", f"Sweep `{sweep.name}`"),
        ("p", f"Task `{sweep.task.name}`, method `{sweep.method.name}` "
              f"({', '.join(f'{k}={v:g}' for k, v in sweep.method.params.items())}), "
              f"N={sweep.teachers} teachers (`{sweep.teacher.model}`), students `{sweep.student.model}`, "
              f"k in {list(sweep.k)}, r={sweep.repeats} repeats" + (f", grid {dict(sweep.grid)}" if grid else "") + ". "
              f"Runs recorded: {n_ok} ok, {n_diverged} diverged (no score), {n_skipped} not run (a teacher failed), "
              f"{len(jobs) - n_ok - n_skipped - n_diverged} failed, {len(planned) - len(jobs)} missing of "
              f"{len(planned)} planned."
              + (f" Scores: student {_metric_label(records[0])}." if records else ""))]
    body: list[tuple] = []
    if not teachers.empty:
        body += [("h2", "Teachers"), ("table", teachers.drop(columns=["key"]))]
    if n_ok:
        metric = _metric_label(records[0])
        comb = by_combination(jobs, grid)
        higher = records[0]["metric"] not in LOWER_IS_BETTER
        summary = summary_by_k(comb, grid, higher)
        _save_csv(comb, out / "by_combination.csv")
        _save_csv(summary, out / "summary_by_k.csv")
        points = grid_points(sweep)
        robust, comparison = robust_tables(jobs, grid, options.m, higher, options.base_k, options.n_boot,
                                           options.level, options.seed)
        _save_csv(robust, out / "robust_by_k.csv")
        _save_csv(comparison, out / "compare_k.csv")
        m = int(robust["m"].iloc[0])
        _figure(summary, grid, points, plot_by_k, metric, out / "by_k")
        _figure(robust, grid, points, plot_robust_by_k, metric, out / "robust_by_k", extra=summary)
        blocks += [("h2", "Verdict"), ("p", verdict(comparison, grid, metric, higher, options.level))]
        body += [
            ("h2", "Worst / best case per k"),
            ("p", "**Paper** (Ilichev et al. 2021): per combination the min / max over all its runs, averaged over "
                  "the combinations of each k. With a primary teacher a combination has r*k runs, so these are "
                  "extremes of more draws as k grows: the worst case falls and the best rises from sample size "
                  f"alone. **Size-matched** (m={m}): the expected min / max of m runs drawn from each combination "
                  "(exact), averaged the same way. **Intervals**: percentile bootstrap over teacher seeds "
                  "(Bayesian-bootstrap weights) and student seeds (resampled), crossed "
                  f"({options.n_boot} draws, seed {options.seed}; `bench/stats.py`). IQM: the interquartile mean of "
                  "the runs (rliable)."),
            ("table", side_by_side(summary, robust, grid, options.level)),
            ("img", "robust_by_k.png", "size-matched worst / best case per k"),
            ("p", "The paper's figure (mean over combinations, ±1 std over combinations):"),
            ("img", "by_k.png", "worst / best case per k, paper"),
            ("h2", f"k teachers vs k={options.base_k}"),
            ("p", f"diff = size-matched worst case at k minus at k={options.base_k} (positive: better), with its "
                  f"{options.level:.0%} bootstrap interval; p_mwu: two-sided Mann-Whitney U over the combinations' "
                  "size-matched worst cases (combinations share teachers, so read it with the interval); "
                  "p_improve: probability that a k-combination's worst case beats a base one."),
            ("table", comparison),
        ]
        tsec = {} if teachers.empty else dict(zip(
            teachers["key"], teachers["t_train"] + teachers["t_eval"] + teachers["t_cache"]))
        if all(k in tsec for keys in jobs["teacher_keys"] for k in keys.split(",")):
            policy = options.teacher_cost
            bud = budget(jobs, charged_teacher_seconds(jobs, tsec, policy), grid, higher).assign(policy=policy)
            _save_csv(bud, out / "budget.csv")
            expected = expected_by_budget(jobs, tsec, grid, policy, higher)
            _save_csv(expected, out / "expected_budget.csv")
            _figure(bud, grid, points, plot_budget, metric, out / "budget")
            _figure(expected, grid, points, plot_expected_budget, metric, out / "expected_budget")
            at_r = expected[expected["n"] == sweep.repeats]
            body += [
                ("h2", "Against compute"),
                ("p", f"Teacher cost policy: **{policy}** (`bench report --teacher-cost full|amortised|free`: "
                      "each student charged its k teachers' whole cost, the cost shared by the runs that use "
                      "each teacher, or none). A teacher's cost is its fine-tuning, evaluation and output "
                      "caching (train + eval + cache); a student's is its job (setup + train + eval). "
                      "compute_seconds: per student, averaged over combinations."),
                ("table", bud[[*grid, "k", "compute_seconds", "teacher_seconds", "student_seconds",
                               "worst", "best", "mean"]]),
                ("img", "budget.png", "worst / best case against compute"),
                ("p", f"Expected best and worst of n students drawn from the runs at each k against what they "
                      f"cost (Dodge et al. 2019, expected validation performance); n = r = {sweep.repeats} here, "
                      "every n in expected_budget.csv:"),
                ("table", at_r[[*grid, "k", "n", "compute_seconds", "expected_best", "expected_worst", "mean"]]),
                ("img", "expected_budget.png", "expected best / worst against compute"),
            ]
        body += _teachers_vs_students(jobs, teachers, grid, out)
    tables = [n for n in ("jobs.csv", "by_combination.csv", "summary_by_k.csv", "robust_by_k.csv", "compare_k.csv",
                          "budget.csv", "expected_budget.csv", "scores_by_grid.csv", "teachers.csv")
              if (out / n).exists()]
    blocks += body + [("p", "Tables: " + ", ".join(f"[{n}]({n})" for n in tables) + ".")]
    atomic_write_bytes(out / "report.md", to_markdown(blocks).encode())
    atomic_write_bytes(out / "report.html", to_html(blocks, out, f"Sweep {sweep.name}").encode())
    return out
