"""benchmarks/gpu_check.py on a machine without CUDA (as CI is): it exits 0, writes its JSON and
Markdown, and lists every part as skipped with its reason; the specs it would run plan here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from helpers import GLUE, REPO

from bench.driver.rerun import STACK_TOLERANCE
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_without_cuda_every_part_is_skipped_with_its_reason(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--budget-s", "120"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    names = list(_module().PARTS)
    assert [p["name"] for p in report["parts"]] == names
    for part in report["parts"]:
        assert part["status"] == "skipped", part
        assert "no CUDA device" in part["reason"]
    assert set(report["skipped"]) == set(names) and not report["failed"]
    md = (out / "gpu_check.md").read_text()
    for name in names:
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert "| skipped |" in row and "no CUDA device" in row
    assert "skipped: " in proc.stdout and all(name in proc.stdout for name in names)


def test_its_caps_fit_the_budget_and_its_specs_plan(tmp_path):
    g = _module()
    assert set(g.CAPS) == set(g.PARTS) and sum(g.CAPS.values()) <= g.BUDGET_S <= 480
    assert g.STACK_TOLERANCE == STACK_TOLERANCE
    if not GLUE.is_dir():
        pytest.skip(f"no GLUE data at {GLUE}")
    for precision in ("fp32", "bf16"):
        spec = g._project(tmp_path / precision, g.minilm_spec(GLUE, precision, 64, 1))
        plan = make_plan(load_sweep(spec))
        assert len(plan.teachers) == 2 and len(plan.jobs) == 1
        assert plan.jobs[0].config.get("precision", "fp32") == precision
