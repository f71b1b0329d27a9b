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
    assert "src=\"robust" not in html  # nothing to fetch beside the page
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
    assert "**t4**: At k=3" in md and "**t1**: At k=3" in md and (out / "compare.png").is_file()
    same = bench_cli("compare", str(a), str(a), cwd=project)
    assert same.returncode == 2 and "distinct names" in same.stderr
