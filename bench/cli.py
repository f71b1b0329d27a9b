"""The ``bench`` command: plan, run and report sweeps."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from math import comb
from pathlib import Path

import bench
from bench.analysis.options import EXPORT_TARGETS, TEACHER_COST_POLICIES
from bench.core.config import parse_device
from bench.core.errors import UserError, did_you_mean
from bench.core.interrupt import Interrupted, install
from bench.core.logs import configure as configure_logging
from bench.core.numerics import NUMERICS_VERSION, numerics_of
from bench.driver.archive import SUFFIX, default_path, is_archive, unpacked, write_archive
from bench.driver.preflight import check_before_run
from bench.driver.rerun import compare_scores, find_record, rerun_job
from bench.driver.run import SAVED_SPEC, pending_work, run_sweep
from bench.engines.cluster import slurm_cluster
from bench.engines.queue import make_slots
from bench.methods.table import METHODS
from bench.models.builders import MODELS
from bench.plan.jobs import grid_points, make_plan
from bench.spec.compose import apply_sets, dump_toml, read_document, resolved_document
from bench.spec.load import ENGINE_NAMES, check_run, load_sweep, with_run_overrides
from bench.tasks.table import TASKS
from bench.training.teachers import teacher_done


def _spec_path(spec: str) -> str:
    """A spec file, or the results folder of a sweep, which holds the spec it was run with."""
    saved = Path(spec) / SAVED_SPEC
    return str(saved) if Path(spec).is_dir() and saved.is_file() else spec


def _run_options(args: argparse.Namespace) -> dict:
    """The [run] options given on the command line (None: not given)."""
    devices = getattr(args, "devices", None)
    scheduler = getattr(args, "scheduler", None)
    return {
        # an empty --devices is an error (no device), not "no option": only None means "not given"
        "devices": None if devices is None else tuple(d.strip() for d in devices.split(",")),
        "jobs_per_device": getattr(args, "jobs_per_device", None),
        "retries": getattr(args, "retries", None),
        "engine": getattr(args, "engine", None) or ("dask" if scheduler else None),
        "scheduler": scheduler,
        "gpus_per_job": getattr(args, "gpus_per_job", None),
        "save_students": getattr(args, "save_students", None),
    }


def _load(args: argparse.Namespace):
    sweep = load_sweep(_spec_path(args.spec), tuple(getattr(args, "set", None) or ()))
    return with_run_overrides(sweep, **_run_options(args))


def _saved_spec(args: argparse.Namespace, sweep) -> str:
    """The spec as this run uses it (extends merged, --set and [run] options applied, output roots
    absolute, its project root stated), with a header saying where it came from:
    results/<sweep>/spec.toml."""
    run = {k: list(v) if isinstance(v, tuple) else v for k, v in _run_options(args).items() if v is not None}
    doc = resolved_document(apply_sets(read_document(_spec_path(args.spec)), tuple(args.set or ())), run, sweep.paths)
    sets = " ".join(f"--set {s}" for s in args.set or ())
    header = (
        f"The spec of sweep {sweep.name} as `bench run` last used it: {os.path.abspath(args.spec)}"
        f"{' ' + sets if sets else ''}{' with [run] options ' + json.dumps(run) if run else ''}.\n"
        f"`bench report {sweep.results_dir()}` reads it; relative paths resolve from [paths] root."
    )
    return dump_toml(doc, header)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print job counts per k, totals and a compute estimate (measured seconds when records exist)."""

    sweep = _load(args)
    plan = make_plan(sweep)
    by_k = plan.counts_by_k()
    teachers_todo, jobs_todo, ok = pending_work(plan)
    mean_job = None
    if ok:
        secs = [r["timings"]["total"] for r in ok.values() if r.get("timings")]
        mean_job = sum(secs) / len(secs) if secs else None
    slots = len(make_slots(sweep.run.devices, sweep.run.jobs_per_device, sweep.run.threads_per_job))
    info = {
        "sweep": sweep.name,
        "teachers": len(plan.teachers),
        "method": sweep.method.name,
        "needs_primary": METHODS[sweep.method.name].needs_primary,
        "repeats": sweep.repeats,
        "grid_points": len(grid_points(sweep)),
        "combinations": {str(k): comb(sweep.teachers, k) for k in sweep.k},
        "by_k": {str(k): n for k, n in by_k.items()},
        "total": len(plan.jobs),
        "teacher_epochs": len(plan.teachers) * sweep.teacher.epochs,
        "student_epochs": len(plan.jobs) * sweep.student.epochs,
        "augmentation_runs": len(plan.augments),
        "teacher_output_jobs": len(plan.outputs),
        "todo": {"teachers": len(teachers_todo), "jobs": len(jobs_todo)},
        "slots": slots,
        "measured_seconds_per_job": mean_job,
        "estimated_remaining_seconds": None if mean_job is None else mean_job * len(jobs_todo) / slots,
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"sweep {sweep.name}: {sweep.teachers} teachers, method {sweep.method.name} "
        f"({'with' if info['needs_primary'] else 'no'} primary), r={sweep.repeats}, "
        f"{info['grid_points']} grid point(s)"
    )
    print(f"{'k':>3} {'C(N,k)':>7} {'jobs':>6}")
    for k in sweep.k:
        print(f"{k:>3} {comb(sweep.teachers, k):>7} {by_k[k]:>6}")
    print(
        f"total: {len(plan.jobs)} distillation jobs + {len(plan.teachers)} teachers"
        + (
            f" + {len(plan.augments)} augmentation runs + {len(plan.outputs)} teacher-output jobs"
            if plan.augments
            else ""
        )
    )
    print(
        f"compute: {info['teacher_epochs']} teacher epochs + {info['student_epochs']} student epochs on {slots} slot(s)"
    )
    print(f"to do: {len(teachers_todo)} teachers, {len(jobs_todo)} jobs", end="")
    if mean_job is not None:
        print(
            f"; measured {mean_job:.2f} s per job -> about {info['estimated_remaining_seconds'] / 60:.1f} "
            f"min of student work left on {slots} slot(s)"
        )
    else:
        print(" (no finished jobs yet to estimate seconds from)")
    return 0


def _overridden(args: argparse.Namespace) -> frozenset[str]:
    """The [run] fields the command line replaces (errors then name the option)."""
    names = ("devices", "jobs_per_device", "retries", "engine", "scheduler", "gpus_per_job")
    return frozenset(n for n in names if getattr(args, n, None) is not None)


def _outputs_line(sweep) -> str:
    """Where a run writes, in one line (every path from the project root, docs/architecture.md)."""
    return (
        f"{sweep.name}: project root {sweep.root}; records in {sweep.results_dir()}, teachers in "
        f"{sweep.paths.teachers}, report in {sweep.reports_dir()}, cache in {sweep.paths.cache}"
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Check every option and what the run needs of this machine (devices, engine, network,
    output layout), then run every missing or failed job and write the report."""

    options = _report_options(args)  # before any work: a typo here must not cost a sweep
    plan = make_plan(_load(args))
    _check_report_options(plan.sweep, options)
    check_before_run(plan, _overridden(args))
    if plan.sweep.design.kind == "adaptive" and not args.teachers_only:
        from bench.study.adaptive import run_adaptive  # lazy: pandas loads only for the commands that need it

        summary, _ = run_adaptive(
            plan, args.quiet, args.mixed_threads, _saved_spec(args, plan.sweep), mixed_numerics=args.mixed_numerics
        )
    else:
        summary = run_sweep(
            plan,
            quiet=args.quiet,
            teachers_only=args.teachers_only,
            mixed_threads=args.mixed_threads,
            spec_text=_saved_spec(args, plan.sweep),
            mixed_numerics=args.mixed_numerics,
        )
    print(
        f"{plan.sweep.name}: trained {summary.teachers_trained} teachers, ran {summary.jobs_run} jobs "
        f"({summary.jobs_ok} ok, {summary.jobs_failed} failed, "
        + (f"{summary.jobs_diverged} diverged, " if summary.jobs_diverged else "")
        + f"{summary.jobs_skipped} not run: teacher failed; "
        f"{summary.already_done} were already recorded) in {summary.wall_seconds:.1f} s",
        file=sys.stderr,
    )
    print(_outputs_line(plan.sweep), file=sys.stderr)  # after the run: a refused input stays one line
    if not args.no_report:
        from bench.analysis.report import (
            write_report,  # lazy: pandas and matplotlib load only for the commands that report
        )

        written = write_report(plan, options)
        if written.terminal:
            print(written.terminal)
        print(f"report: {written.folder / 'report.md'} and {written.folder / 'report.html'}", file=sys.stderr)
    if args.teachers_only:
        missing = [
            t.key for t in plan.teachers if not teacher_done(plan.sweep.paths.teachers, plan.sweep.task.name, t.key)
        ]
        if missing:
            print(
                f"{plan.sweep.name}: {len(missing)} of {len(plan.teachers)} teachers failed "
                f"({', '.join(missing[:5])}{'...' if len(missing) > 5 else ''})",
                file=sys.stderr,
            )
            return 1
    return 0 if summary.jobs_failed == 0 and summary.jobs_skipped == 0 else 1


def _report_options(args: argparse.Namespace):
    from bench.analysis.report import (
        ReportOptions,  # lazy: pandas and matplotlib load only for the commands that report
    )

    if args.teacher_cost not in TEACHER_COST_POLICIES:
        raise UserError(
            f"--teacher-cost: unknown policy '{args.teacher_cost}'"
            f"{did_you_mean(args.teacher_cost, TEACHER_COST_POLICIES)}; expected one of: "
            f"{', '.join(TEACHER_COST_POLICIES)}"
        )
    for name in ("m", "base_k"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    if not 0 < args.level < 1:
        raise UserError(f"--level: expected a confidence level between 0 and 1, got {args.level}")
    return ReportOptions(teacher_cost=args.teacher_cost, m=args.m, level=args.level, base_k=args.base_k)


def _check_report_options(sweep, options) -> None:
    """The report options that depend on the sweep: --m at most r, --base-k one of its k."""
    from bench.analysis.report import check_m  # lazy: pandas and matplotlib load only for the commands that report

    check_m(options, sweep.repeats)
    if options.base_k not in sweep.k:
        raise UserError(
            f"--base-k: expected one of the sweep's k ({', '.join(map(str, sweep.k))}), got {options.base_k}"
        )


def cmd_report(args: argparse.Namespace) -> int:
    """Write tables and figures from the sweep's records (a spec, a results folder or an archive)."""
    from bench.analysis.report import write_report  # lazy: pandas and matplotlib load only for the commands that report

    options = _report_options(args)
    if is_archive(args.spec):
        if args.set:
            raise UserError(f"--set: expected no --set with an archive ({args.spec} holds the spec it was run with)")
        with unpacked(args.spec, Path(args.out or "reports")) as plan:
            _check_report_options(plan.sweep, options)
            written = write_report(plan, options)
    else:
        if args.out:
            raise UserError("--out: only for an archive (a spec's report goes to its [paths] reports)")
        plan = make_plan(_load(args))
        _check_report_options(plan.sweep, options)
        written = write_report(plan, options)
    if written.terminal:
        print(written.terminal)
    print(f"report: {written.folder / 'report.md'} and {written.folder / 'report.html'}")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    """Write the sweep's records and teachers' metadata as one file (``bench.driver.archive``)."""
    if args.set:
        raise UserError(
            "--set: expected none (an archive stores the spec as it is; edit the spec, or archive "
            "results/<sweep>, which holds the spec the sweep was run with)"
        )
    plan = make_plan(_load(args))
    out = Path(args.out) if args.out else default_path(plan)
    if not str(out).endswith(SUFFIX):
        raise UserError(f"--out: expected a file name ending in {SUFFIX}, got {out}")
    teachers, records = write_archive(plan, _spec_path(args.spec), out)
    print(f"archive: {records} records and {teachers} teachers' metadata in {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the sweep's records for an experiment tracker or analysis tool (one run per job)."""
    from bench.analysis.export import export  # lazy: pandas and the tracker's library load only for this command

    out, n = export(make_plan(_load(args)), args.to, Path(args.out) if args.out else None)
    print(f"export: {n} records to {args.to} in {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Overlay several sweeps in one table and figure."""
    from pathlib import Path

    from bench.analysis.compare import (
        write_comparison,  # lazy: pandas and matplotlib load only for the commands that report
    )

    plans = [make_plan(load_sweep(spec)) for spec in args.specs]
    out = write_comparison(plans, _report_options(args), Path(args.out) if args.out else None)
    print(f"comparison: {out / 'compare.md'} and {out / 'compare.html'}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print what is done, failed, missing or damaged in a sweep and what a rerun would do."""
    from bench.analysis.doctor import (  # lazy: pandas and matplotlib load only for the commands that report
        diagnose,
        format_diagnosis,
    )

    d = diagnose(make_plan(_load(args)))
    print(json.dumps(d, indent=1) if args.json else format_diagnosis(d))
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    """Run one job again from its record and compare the scores."""

    try:
        parse_device(args.device)
    except ValueError as e:
        raise UserError(f"--device: {e}") from None
    path = find_record(args.record, args.results)
    old, new = rerun_job(path, args.device, args.replace)
    same, how = compare_scores(old, new)
    print(
        f"job {old['key']}: score {new['score']!r} (recorded: {old.get('score')!r}); every score "
        + how
        + ("; the record was replaced" if args.replace else "")
    )
    if not old.get("deterministic"):
        print(
            "note: the record was made without run.deterministic; on a GPU its scores need not reproduce bit "
            "for bit (CPU runs do)"
        )
    if numerics_of(old) != NUMERICS_VERSION:
        print(
            f"note: the record was made with numerics {numerics_of(old)}, this bench computes numerics "
            f"{NUMERICS_VERSION} (bench.core.numerics): its scores need not reproduce"
        )
    return 0 if same or args.replace else 1


def _columns(rows: list[tuple[str, ...]]) -> str:
    """Rows as lines of left-aligned columns (the last one unpadded)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)] if rows else []
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip() for r in rows)


def _ls_rows(what: str) -> list[tuple[str, ...]]:
    """One row per entry of the table ``what`` (built-in and installed plugins)."""
    if what == "tasks":
        return [(n, t.modality, "metrics: " + ", ".join(t.metrics), t.doc) for n, t in TASKS.items()]
    if what == "models":
        return [(n, m.modality, m.doc, "params: " + (", ".join(m.params) or "none")) for n, m in MODELS.items()]
    return [
        (
            n,
            "primary: " + ("yes" if m.needs_primary else "no"),
            "params: "
            + (", ".join(k if p.default is None else f"{k}={p.default:g}" for k, p in m.params.items()) or "none"),
            m.doc,
        )
        for n, m in METHODS.items()
    ]


def cmd_ls(args: argparse.Namespace) -> int:
    """List the tasks, model families or methods a spec can name, one line each (plugins included)."""
    print(_columns(_ls_rows(args.what)))
    return 0


def package_version() -> str:
    """bench's version from the installed package's metadata (the source's when not installed)."""
    try:
        return version("bench")
    except PackageNotFoundError:
        return bench.__version__


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher-cost",
        default="full",
        metavar="{" + ",".join(TEACHER_COST_POLICIES) + "}",
        help="what a student is charged for its teachers in the "
        "compute figures: full (default), amortised (shared by the runs using them) or free",
    )
    p.add_argument("--m", type=int, help="runs per size-matched worst / best case, at most r (default: the repeats r)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of every interval (default 0.95)")
    p.add_argument("--base-k", type=int, default=1, help="the k the others are compared with (default 1)")


def cmd_slurm_script(args: argparse.Namespace) -> int:
    """Print the Slurm batch script of one worker job of the sweep's [run.slurm] cluster."""
    import dataclasses
    from pathlib import Path

    sweep = _load(args)
    if sweep.run.engine != "slurm":
        sweep = dataclasses.replace(sweep, run=dataclasses.replace(sweep.run, engine="slurm"))

        check_run(sweep.run, sweep.source, "run")
    cluster = slurm_cluster(sweep.run, Path(sweep.results_dir() / "logs").resolve())
    try:
        print(cluster.job_script())
    finally:
        cluster.close()
    return 0


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY.PATH=VALUE",
        help="set a spec value before validation, e.g. --set teacher.lr=3e-4 --set k=[1,3] (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Seed-robustness studies of multi-teacher distillation.")
    p.add_argument("--version", action="version", version=f"bench {package_version()}")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument(
        "-q",
        "--quiet-log",
        dest="log_level",
        action="store_const",
        const=logging.WARNING,
        default=logging.INFO,
        help="show only warnings and errors on stderr (results and the progress bar are unchanged)",
    )
    talk.add_argument(
        "-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG, help="show debug messages too"
    )
    sub = p.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="count the jobs of a sweep and estimate its compute")
    plan.add_argument("spec")
    _add_set(plan)
    plan.add_argument("--json", action="store_true", help="print the counts as JSON")
    run = sub.add_parser("run", help="run every missing or failed job of a sweep, then report")
    run.add_argument("spec")
    _add_set(run)
    run.add_argument("--devices", help="comma-separated devices, e.g. cuda:0,cuda:1 or cpu (overrides [run])")
    run.add_argument("--jobs-per-device", type=int, help="slots per device (overrides [run])")
    run.add_argument("--retries", type=int, help="extra attempts of a failed job (overrides [run])")
    run.add_argument(
        "--engine",
        metavar="{" + ",".join(ENGINE_NAMES) + "}",
        help="where jobs run (overrides [run]; docs/cluster.md)",
    )
    run.add_argument(
        "--scheduler",
        help="Dask scheduler address or scheduler file (implies --engine dask); "
        "without it --engine dask starts a local cluster on loopback",
    )
    run.add_argument(
        "--gpus-per-job",
        type=float,
        help="dask/slurm: GPU share per job, e.g. 0.5 packs two students per GPU, 0 runs CPU jobs (overrides [run])",
    )
    run.add_argument(
        "--save-students",
        choices=("none", "best", "all"),
        help="keep distilled students under results/<sweep>/students/: none, best (per k) or all (overrides [run])",
    )
    run.add_argument("--no-report", action="store_true", help="do not write the report afterwards")
    run.add_argument("--teachers-only", action="store_true", help="only fine-tune (and cache) the teachers")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--mixed-threads",
        action="store_true",
        help="resume although existing records or "
        "teachers were made with another torch thread count (run.threads_per_job; scores depend on it)",
    )
    run.add_argument(
        "--mixed-numerics",
        action="store_true",
        help="resume although existing records or teachers were made with another numerics version "
        "(bench's NUMERICS_VERSION, or none: older than it; scores depend on it)",
    )
    _add_report_options(run)
    rep = sub.add_parser("report", help="write tables and figures from the records")
    rep.add_argument("spec", help="a spec file, a results/<sweep> folder, or an archive (.jsonl.gz, bench archive)")
    _add_set(rep)
    rep.add_argument("--out", help="with an archive: the reports folder (default: reports, under this folder)")
    _add_report_options(rep)
    arc = sub.add_parser("archive", help="write a sweep's records and teachers' metadata as one file")
    arc.add_argument("spec", help="a spec file or a results/<sweep> folder")
    _add_set(arc)
    arc.add_argument("--out", help="the file (default: archive/<sweep>.jsonl.gz under the project root)")
    exp = sub.add_parser(
        "export",
        help="write the records for TensorBoard, MLflow, W&B (offline), rliable or Parquet (one run per job; "
        'needs pip install "bench[export]")',
    )
    exp.add_argument("spec", help="a spec file or a results/<sweep> folder")
    _add_set(exp)
    exp.add_argument("--to", required=True, choices=EXPORT_TARGETS, help="the target format")
    exp.add_argument("--out", help="output folder (default: reports/<sweep>/export/<target>)")
    cmp = sub.add_parser("compare", help="overlay two or more sweeps in one table and figure")
    cmp.add_argument("specs", nargs="+", metavar="SPEC")
    cmp.add_argument("--out", help="output folder (default: reports/compare-A-vs-B)")
    _add_report_options(cmp)
    doc = sub.add_parser("doctor", help="what is done, failed, missing or damaged, and what a rerun would do")
    doc.add_argument("spec")
    _add_set(doc)
    doc.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    rr = sub.add_parser("rerun", help="run one job again from its record alone and compare its scores")
    rr.add_argument("record", help="a record file, or a job key (or unique prefix) under --results")
    rr.add_argument("--results", default="results", help="results root to search for a key (default: results)")
    rr.add_argument("--device", default="cpu", help="cpu or cuda:N (default: cpu)")
    rr.add_argument("--replace", action="store_true", help="replace the record with the new one")
    slurm = sub.add_parser("slurm-script", help="print the batch script of one Slurm worker job ([run.slurm])")
    slurm.add_argument("spec")
    _add_set(slurm)
    ls = sub.add_parser("ls", help="list the tasks, model families or methods a spec can name (plugins included)")
    ls.add_argument("what", choices=("tasks", "models", "methods"))
    return p


COMMANDS = {
    "plan": cmd_plan,
    "run": cmd_run,
    "report": cmd_report,
    "archive": cmd_archive,
    "export": cmd_export,
    "compare": cmd_compare,
    "doctor": cmd_doctor,
    "rerun": cmd_rerun,
    "slurm-script": cmd_slurm_script,
    "ls": cmd_ls,
}


def report_internal_error(e: Exception, argv: list[str]) -> str:
    """Write the traceback of an unexpected exception (a bug, not the user's input) with the command
    line and version to a new file in the system temp folder; return its path."""
    import tempfile  # lazy: only on a crash
    import traceback  # lazy: only on a crash

    fd, path = tempfile.mkstemp(prefix="bench-error-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"bench {package_version()}: {' '.join(['bench', *argv])}\n\n")
        f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bench`` console script. Exit codes: 0 done, 1 some jobs failed, 2 a user
    error (one line), 3 an internal error (one line naming the exception and the file holding its
    traceback); SIGINT and SIGTERM stop the command (its workers first, bench/core/interrupt.py)
    with one line and exit 130 / 143."""

    install()
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)  # the "bench" logger only: diagnostics on stderr, results on stdout
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(
            f"interrupted by {e.name}: stopped; every finished result is kept and the next `bench run` "
            f"continues from them",
            file=sys.stderr,
        )
        return e.code
    except OSError as e:  # a full disk, a lost permission: one line naming the file, not a traceback
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: one line and the traceback in a file, not a page of traceback
        try:
            where = f"full traceback in {report_internal_error(e, sys.argv[1:] if argv is None else argv)}"
        except OSError as why:
            where = f"its traceback could not be written ({why})"
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"internal error: {type(e).__name__}: {first} ({where}; please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
