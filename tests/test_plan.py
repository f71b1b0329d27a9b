"""Plan counts (the paper's 576 / 189) and job keys."""

import dataclasses
import json
from math import comb
from pathlib import Path

import pytest
from helpers import digits_spec

from bench.cli import main
from bench.plan.jobs import expected_count, make_plan
from bench.spec.load import load_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "spec,total,primary", [("sweeps/paper/cola-kd-primary.toml", 576, True), ("sweeps/paper/cola-kd.toml", 189, False)]
)
def test_paper_counts_from_plan_json(capsys, monkeypatch, spec, total, primary):
    monkeypatch.chdir(REPO)
    assert main(["plan", spec, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total"] == total
    assert info["by_k"] == {str(k): (k if primary else 1) * comb(6, k) * 3 for k in range(1, 7)}
    assert info["teachers"] == 6 and info["needs_primary"] is primary


def test_plan_enumerates_every_combination_primary_and_repeat(project):
    sweep = load_sweep(digits_spec(project, n=4, r=2, method="kd-primary"))
    plan = make_plan(sweep)
    assert len(plan.jobs) == sum(expected_count(4, k, 2, True) for k in range(1, 5)) == 64
    triples = {(j.combination, j.primary, j.repeat) for j in plan.jobs}
    assert len(triples) == len(plan.jobs)  # no duplicates
    assert all(j.primary in j.combination for j in plan.jobs)
    assert len({j.key for j in plan.jobs}) == len(plan.jobs)
    assert [t.seed for t in plan.teachers] == [10, 11, 12, 13]


def test_grid_multiplies_the_plan(project):
    path = digits_spec(project, n=3, r=1, extra="[grid]\ntemperature = [1, 2, 4]\nalpha = [0.1, 0.5]\n")
    plan = make_plan(load_sweep(path))
    assert len(plan.jobs) == 7 * 6
    assert {(j.grid["temperature"], j.grid["alpha"]) for j in plan.jobs} == {
        (t, a) for t in (1.0, 2.0, 4.0) for a in (0.1, 0.5)
    }
    assert all(j.config["method"]["params"]["temperature"] == j.grid["temperature"] for j in plan.jobs)


def test_keys_are_deterministic_and_invalidate_exactly_the_dependants(project):
    sweep = load_sweep(digits_spec(project))
    a, b = make_plan(sweep), make_plan(load_sweep(digits_spec(project)))
    assert [j.key for j in a.jobs] == [j.key for j in b.jobs]
    # a different student setting: same teachers, all new job keys
    s2 = dataclasses.replace(sweep, student=dataclasses.replace(sweep.student, epochs=5))
    c = make_plan(s2)
    assert [t.key for t in c.teachers] == [t.key for t in a.teachers]
    assert not {j.key for j in c.jobs} & {j.key for j in a.jobs}
    # one more teacher: the old teachers and every job over them keep their keys
    d = make_plan(dataclasses.replace(sweep, teachers=4, k=(1, 2, 3)))
    assert [t.key for t in d.teachers[:3]] == [t.key for t in a.teachers]
    old = {j.key for j in a.jobs}
    assert {j.key for j in d.jobs if 3 not in j.combination} == old
    # a different teacher setting changes every teacher key and so every job key
    e = make_plan(dataclasses.replace(sweep, teacher=dataclasses.replace(sweep.teacher, lr=0.02)))
    assert not {t.key for t in e.teachers} & {t.key for t in a.teachers}
    assert not {j.key for j in e.jobs} & old
