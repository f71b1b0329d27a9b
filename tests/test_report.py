"""Reports regenerate from records alone, byte for byte; report.html stands alone; bench compare."""

import pandas as pd
from helpers import bench_cli, digits_spec


def test_report_is_reproducible_and_self_contained(project):
    spec = digits_spec(project, n=3, r=2)
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    out = project / "reports" / "tiny"
    first = bench_cli("report", str(spec), cwd=project)
    assert first.returncode == 0, first.stderr
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"report.md", "report.html", "robust_by_k.csv", "compare_k.csv", "robust_by_k.pdf"} <= set(files)
    again = bench_cli("report", str(spec), cwd=project)
    assert again.returncode == 0
    changed = [name for name, data in files.items() if (out / name).read_bytes() != data]
    assert not changed, f"regenerated differently: {changed}"
    html = files["report.html"].decode()
    assert html.count("data:image/png;base64,") == 4 and '<img alt="size-matched' in html
    assert 'src="robust' not in html  # nothing to fetch beside the page
    robust = pd.read_csv(out / "robust_by_k.csv")
    assert list(robust["k"]) == [1, 2, 3] and list(robust["m"]) == [2, 2, 2]
    # the teacher cost policy is a report option and is said in the report
    amortised = bench_cli("report", str(spec), "--teacher-cost", "amortised", cwd=project)
    assert amortised.returncode == 0
    assert "Teacher cost policy: **amortised**" in (out / "report.md").read_text()
    assert set(pd.read_csv(out / "expected_budget.csv")["policy"]) == {"amortised"}
    bad = bench_cli("report", str(spec), "--teacher-cost", "amortized", cwd=project)
    assert bad.returncode == 2 and "did you mean 'amortised'?" in bad.stderr


def test_compare_overlays_two_sweeps(project):
    a = digits_spec(project, name="t4", n=3, r=2, extra="temperature = 4.0\n")
    b = digits_spec(project, name="t1", n=3, r=2, extra="temperature = 1.0\n")
    for spec in (a, b):
        assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    proc = bench_cli("compare", str(a), str(b), cwd=project)
    assert proc.returncode == 0, proc.stderr
    out = project / "reports" / "compare-t4-vs-t1"
    table = pd.read_csv(out / "compare.csv")
    assert list(table["sweep"].unique()) == ["t4", "t1"] and len(table) == 6
    md = (out / "compare.md").read_text()
    assert "**t4**: Headline (" in md and "**t1**: Headline (" in md and (out / "compare.png").is_file()
    assert md.count("Secondary reading, the largest k alone (all runs, failed ones included): At k=3") == 2
    same = bench_cli("compare", str(a), str(a), cwd=project)
    assert same.returncode == 2 and "distinct names" in same.stderr


def _verdict_of(values: dict, higher: bool = True, metric: str = "dev accuracy") -> str:
    """The report's verdict on a one-run-per-combination runs table {combination: score}."""
    from bench.analysis.stats import degenerate_notes, robust_tables
    from bench.analysis.verdict import verdict

    jobs = pd.DataFrame(
        [
            {
                "k": len(c.split("-")),
                "combination": c,
                "repeat": 0,
                "score": v,
                "status": "ok",
                "teacher_keys": c,
                "t_total": 1.0,
            }
            for c, v in values.items()
        ]
    )
    summary, comparison = robust_tables(jobs, higher_is_better=higher)
    return verdict(comparison, [], metric, higher, 0.95, None, "N=3, r=1", degenerate_notes(jobs))


THREE = ("0", "1", "2", "0-1", "0-2", "1-2", "0-1-2")


def test_verdict_reads_lower_is_better_metrics_the_right_way():
    # perplexity falls clearly with k (a gain), with a little noise between combinations
    ppl = dict(zip(THREE, (120.0, 121.0, 119.5, 110.2, 109.6, 110.1, 100.0)))
    text = _verdict_of(ppl, higher=False, metric="val perplexity")
    assert "lower (better) than at k=1" in text and "More teachers improved the worst case" in text
    assert "higher (better)" not in text and "raised" not in text


def test_verdict_refuses_degenerate_and_too_small_designs():
    flat = _verdict_of(dict(zip(THREE, [0.0] * 7)), metric="dev mcc")
    assert flat.startswith("Caution: every run has the same score") and "no verdict" in flat
    small = _verdict_of({"0": 0.5, "1": 0.6, "0-1": 0.7})
    assert "too small to tell anything about k" in small and "CI" not in small
    # a noisy null with N=3, r=1: an interval, and the design's limit in words
    noisy = _verdict_of(dict(zip(THREE, (0.50, 0.56, 0.53, 0.55, 0.51, 0.54, 0.52))))
    assert "95% CI of the gain" in noisy and "cannot reliably tell a worst-case change smaller than" in noisy


def test_verdict_names_a_missing_largest_k_and_a_sweep_without_k1():
    from bench.analysis.stats import robust_tables
    from bench.analysis.verdict import verdict

    rows = [(c, v) for c, v in zip(THREE[:-1], (0.50, 0.56, 0.53, 0.55, 0.51, 0.54))]  # k=3 not run yet
    jobs = pd.DataFrame(
        [
            {
                "k": len(c.split("-")),
                "combination": c,
                "repeat": 0,
                "score": v,
                "status": "ok",
                "teacher_keys": c,
                "t_total": 1.0,
            }
            for c, v in rows
        ]
    )
    _, comparison = robust_tables(jobs)
    assert "k=3 has no combination with m=1 complete runs yet, so the comparison is at k=2" in verdict(
        comparison, [], "dev accuracy", True, 0.95, None, "N=3", [], planned_k=3
    )
    # no k=1 runs at all: the tables still have the single-teacher columns, empty
    summary, comparison = robust_tables(jobs[jobs["k"] > 1], base_k=2)
    assert summary["single_worst"].isna().all() and comparison.empty


def test_low_lm_cache_fidelity_is_named_in_the_notes():
    from bench.analysis.report import gap_notes

    jobs = pd.DataFrame(
        {
            "k": [1, 3, 3],
            "temperature": [1.0, 4.0, 1.0],
            "status": ["ok"] * 3,
            "cache_grad_cosine": [0.999, 0.93, 0.985],
        }
    )
    notes = gap_notes(jobs, ["temperature"], pd.DataFrame(), False, 0)
    assert len(notes) == 1
    assert "in 2 run(s)" in notes[0] and "lowest 0.930 at k=3, temperature=4" in notes[0]
    assert gap_notes(jobs.assign(cache_grad_cosine=0.995), ["temperature"], pd.DataFrame(), False, 0) == []
