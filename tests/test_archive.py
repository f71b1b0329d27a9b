"""Archives (bench.driver.archive): a sweep's records as one file, reports rebuilt from it in any
folder, and the committed archives behind docs/results-cpu.md checked against the numbers the page
prints."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, bench_cli, digits_spec

ARCHIVES = sorted((REPO / "archive").glob("*.jsonl.gz"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    spec = digits_spec(folder, n=3, r=2)
    proc = bench_cli("run", str(spec), "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder


def test_archive_round_trip_rebuilds_the_same_report_elsewhere(tiny: Path, tmp_path: Path):
    proc = bench_cli("archive", "tiny.toml", cwd=tiny)
    assert proc.returncode == 0, proc.stderr
    path = tiny / "archive" / "tiny.jsonl.gz"
    assert "archive: 14 records and 3 teachers' metadata" in proc.stdout
    lines = [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines()]
    assert lines[0]["bench_archive"] == 1 and "paths" not in lines[0]["spec"]
    assert [("teacher" in x, "record" in x) for x in lines[1:]].count((False, True)) == 14
    first = path.read_bytes()
    assert bench_cli("archive", "tiny.toml", cwd=tiny).returncode == 0
    assert path.read_bytes() == first  # same records, same bytes

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "tiny.jsonl.gz"
    shutil.copy(path, moved)
    proc = bench_cli("report", str(moved), "--out", "rebuilt", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "variance components" in proc.stdout
    for table in ("headline.csv", "robust_by_k.csv", "compare_k.csv", "teachers.csv", "variance_components.csv"):
        assert (elsewhere / "rebuilt" / "tiny" / table).read_bytes() == (tiny / "reports" / "tiny" / table).read_bytes()
    assert not list(elsewhere.glob("results")) and not list(elsewhere.glob("teachers"))  # nothing but the report


def test_bad_archives_are_one_line_and_exit_2(tiny: Path, tmp_path: Path):
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip")
    proc = bench_cli("report", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "expected a bench archive" in proc.stderr and len(proc.stderr.splitlines()) == 1
    bad.write_bytes(gzip.compress(b'{"something": 1}\n'))
    proc = bench_cli("report", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "format 1" in proc.stderr
    assert not (tmp_path / "reports").exists()
    proc = bench_cli("report", "tiny.toml", "--out", "x", cwd=tiny)
    assert proc.returncode == 2 and "--out: only for an archive" in proc.stderr
    proc = bench_cli("archive", "tiny.toml", "--out", "x.json", cwd=tiny)
    assert proc.returncode == 2 and ".jsonl.gz" in proc.stderr
    proc = bench_cli("archive", "tiny.toml", "--set", "repeats=3", cwd=tiny)
    assert proc.returncode == 2 and "--set" in proc.stderr


def test_archive_lines_are_checked_and_stay_inside_their_folder(tiny: Path, tmp_path: Path):
    """A record key that would name a path elsewhere, or an unknown line, is refused in one line
    (exit 2) and nothing is written; a design line comes back as results/<sweep>/design.json."""
    assert bench_cli("archive", "tiny.toml", cwd=tiny).returncode == 0
    lines = gzip.decompress((tiny / "archive" / "tiny.jsonl.gz").read_bytes()).decode().splitlines()
    for bad, expected in (({"record": {"key": "../../escape"}}, "record.key"), ({"what": {}}, "expected a teacher")):
        forged = tmp_path / "forged.jsonl.gz"
        forged.write_bytes(gzip.compress(("\n".join([*lines, json.dumps(bad)]) + "\n").encode()))
        proc = bench_cli("report", str(forged), cwd=tmp_path)
        assert proc.returncode == 2 and expected in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert not (tmp_path / "reports").exists() and not list(tmp_path.parent.glob("escape*"))
    from bench.driver.archive import unpacked

    designed = tmp_path / "designed.jsonl.gz"
    designed.write_bytes(gzip.compress(("\n".join([*lines, json.dumps({"design": {"looks": []}})]) + "\n").encode()))
    with unpacked(designed, tmp_path / "out") as plan:
        assert json.loads((plan.sweep.results_dir() / "design.json").read_text()) == {"looks": []}


def test_an_altered_record_in_an_archive_is_named_not_reported(tiny: Path, tmp_path: Path):
    assert bench_cli("archive", "tiny.toml", cwd=tiny).returncode == 0
    lines = gzip.decompress((tiny / "archive" / "tiny.jsonl.gz").read_bytes()).decode().splitlines()
    rec = json.loads(lines[-1])
    rec["record"]["score"] = 0.123456  # the score no longer matches... its key still does: a sound record
    rec["record"]["config"]["student"]["lr"] = 1.0  # but this breaks the key: not the record of its key
    lines[-1] = json.dumps(rec)
    altered = tmp_path / "altered.jsonl.gz"
    altered.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    proc = bench_cli("report", str(altered), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert "1 missing of 14 planned" in report and "0.123456" not in report


def _headline(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "headline.csv")


@pytest.mark.slow
@pytest.mark.parametrize("archive", ARCHIVES, ids=[p.name for p in ARCHIVES])
def test_committed_archives_rebuild_the_numbers_the_results_page_prints(archive: Path, tmp_path: Path):
    """Every committed archive rebuilds, in an empty folder, the headline the page quotes: its
    section's verdict holds the worst case's gain and interval as the rebuilt report prints them."""
    proc = bench_cli("report", str(archive), "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    name = archive.name[: -len(".jsonl.gz")]
    head = _headline(tmp_path / name)
    page = (REPO / "docs" / "results-cpu.md").read_text() + (REPO / "README.md").read_text()
    worst = head[head["statistic"] == "worst_m"].iloc[0]
    text = f"worst case {worst['gain']:+.4f} [{worst['lo']:+.4f}, {worst['hi']:+.4f}]"
    assert re.sub(r"\s+", " ", text) in re.sub(r"\s+(> )?", " ", page), f"{name}: the page does not print {text}"
