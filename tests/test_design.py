"""Adaptive designs ([design] kind = "adaptive"): the balanced order of the plan's cells, the
sequential verdict over planned looks, and `bench run` in batches end to end on digits."""

import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import bench_cli, digits_spec

from bench.analysis.sequential import cell_key, decidable_looks, decide, look_alphas, replay
from bench.plan.design import balanced_order, cell_batches, job_batches, plan_cells
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from calibration import Scenario, simulate  # noqa: E402  (the calibration simulator)


def _cells(n: int, primary: bool) -> dict[int, list]:
    return {
        k: [(c, p) for c in itertools.combinations(range(n), k) for p in (c if primary else (-1,))]
        for k in range(1, n + 1)
    }


@pytest.mark.parametrize("n,primary,teacher_bound", [(4, False, 1), (4, True, 2), (6, False, 2), (6, True, 2)])
def test_every_prefix_of_the_order_uses_teachers_and_primaries_about_equally(n, primary, teacher_bound):
    for seed in range(30):
        for k, cells in _cells(n, primary).items():
            order = balanced_order(cells, seed)
            assert sorted(order) == sorted(cells)
            used, prim = Counter(dict.fromkeys(range(n), 0)), Counter(dict.fromkeys(range(n), 0))
            for combo, p in order:
                used.update(combo)
                prim[p] += primary
                assert max(used.values()) - min(used.values()) <= teacher_bound, (seed, k, used)
                assert max(prim.values()) - min(prim.values()) <= 1, (seed, k, prim)


def test_batches_hold_every_cell_once_and_the_same_share_of_every_k():
    cells = _cells(6, False)
    batches = cell_batches(cells, 6, seed=3)
    assert len(batches) == 6
    assert sorted(c for b in batches for c in b) == sorted(c for v in cells.values() for c in v)
    for j in range(1, 7):
        prefix = [c for b in batches[:j] for c in b]
        for k, all_k in cells.items():
            assert sum(len(c[0]) == k for c in prefix) == -(-j * len(all_k) // 6)  # ceil(j C_k / L)
    assert cell_batches(cells, 6, seed=3) == batches  # seeded: the same order every time
    assert cell_batches(cells, 6, seed=4) != batches


def test_adaptive_plan_has_the_full_plans_jobs_and_keys(project):
    path = digits_spec(project, n=4, r=2, extra='[design]\nkind = "adaptive"\nlooks = 3\n')
    adaptive = make_plan(load_sweep(path))
    full = make_plan(load_sweep(digits_spec(project, name="tiny", n=4, r=2)))
    assert [j.key for j in adaptive.jobs] == [j.key for j in full.jobs]  # [design] is in no key
    batches = job_batches(adaptive)
    assert sorted(j.key for b in batches for j in b) == sorted(j.key for j in full.jobs)
    for b in batches:  # a cell comes whole: every repeat of it in the same batch
        assert all(Counter((j.combination, j.repeat) for j in b)[(j.combination, 0)] == 1 for j in b)
        assert len(b) % 2 == 0
    assert sum(len(v) for v in plan_cells(adaptive).values()) == 15


def test_error_is_spent_over_the_looks_that_can_decide():
    ends = [f"{i}" for i in range(6)] + ["0-1-2-3-4-5"]  # k = 1 and k = 6: 7 combinations, 7 parameters
    few = ends + ["0-1", "2-3", "4-5"]  # 10 combinations, 8 parameters: 2 residual df
    pairs = ends + ["-".join(map(str, c)) for c in itertools.combinations(range(6), 2)]  # 14 residual df
    assert decidable_looks([ends, few, pairs], 6) == [False, False, True]
    assert decidable_looks([ends, few], 6) == [False, True]  # the last look decides with any df
    assert look_alphas(0.05, [False, True, True]) == [0.0, 0.025, 0.025]
    assert look_alphas(0.05, [False, False]) == [0.0, 0.0]


def _replay(sc: Scenario, seed: int, **kw):
    runs = simulate(sc, np.random.default_rng(seed))
    batches = [[cell_key(*c) for c in b] for b in cell_batches(_cells(sc.n, sc.primary), 6, seed)]
    return replay(runs, batches, sc.n, **kw), len(runs)


def test_a_clear_effect_stops_early_for_effect():
    (looks, why), total = _replay(Scenario("big", shift=0.04), 1)
    assert why == "effect"
    assert looks[-1].jobs <= 0.4 * total
    assert looks[-1].points[0]["lo"] > 0


def test_under_the_null_the_design_rarely_stops_for_an_effect():
    stops = [_replay(Scenario("null"), seed)[0][1] for seed in range(12)]
    assert stops.count("effect") <= 1  # error 0.05 over all looks: about 0.6 expected in 12
    assert stops.count("complete") >= 11


def test_tolerance_and_budget_stop_the_design():
    (looks, why), total = _replay(Scenario("null"), 2, tolerance=1.0)
    assert why == "precise" and looks[-1].jobs < total
    (looks, why), total = _replay(Scenario("null"), 2, budget=0.5)
    assert why == "budget" and looks[-1].jobs <= 0.5 * total


def test_decide_reads_every_grid_point():
    yes = {"lo": 0.01, "hi": 0.03, "half_width": 0.01}
    no = {"lo": -0.01, "hi": 0.03, "half_width": 0.02}
    assert decide([yes, yes], 0.0) == "effect"
    assert decide([yes, no], 0.0) is None
    assert decide([yes, no], 0.02) == "precise"
    assert decide([{"lo": float("nan"), "hi": float("nan"), "half_width": float("nan")}], 1.0) is None


def test_adaptive_run_stops_before_the_full_plan_and_reports_why(project):
    extra = '[design]\nkind = "adaptive"\nlooks = 4\ntolerance = 1.0\n'
    path = digits_spec(project, name="adapt", n=4, r=1, extra=extra, student_epochs=1)
    proc = bench_cli("run", str(path), cwd=project)
    assert proc.returncode == 0, proc.stderr
    state = json.loads((project / "results" / "adapt" / "design.json").read_text())
    assert state["stopped"] == "precise"
    assert state["jobs_run"] < state["jobs_full"] == 15
    assert len(list((project / "results" / "adapt" / "records").glob("*.json"))) == state["jobs_run"]
    assert state["projected_full_seconds"] > state["student_seconds"] > 0
    assert sum(state["alphas"]) == pytest.approx(0.05)
    assert "adaptive design: stopped after" in proc.stderr
    report = (project / "reports" / "adapt" / "report.md").read_text()
    assert "## Adaptive design" in report and "narrower than the tolerance" in report
    assert "**Adaptive design verdict**" in report
    again = bench_cli("run", str(path), "--no-report", cwd=project)  # continues: nothing left to run
    assert again.returncode == 0, again.stderr
    assert json.loads((project / "results" / "adapt" / "design.json").read_text())["looks"] == state["looks"]
    assert "ran 0 jobs" in again.stderr and f"{state['jobs_run']} were already recorded" in again.stderr
