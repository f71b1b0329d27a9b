"""Keys that cannot drift: the keys of every shipped spec are pinned (tests/golden_keys.json, made
with the code before the sub-package move), a new spec field or method parameter at its default
leaves every key as it was, and the defaults that keys take for granted are pinned too.

A change that re-keys on purpose (a new job format) regenerates golden_keys.json and says so in
its commit: `python tests/test_keys.py > tests/golden_keys.json`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from bench.core.config import AugmentSpec, TaskSpec, TrainSpec
from bench.core.hashing import stable_hash
from bench.core.keys import ORIGINAL_PARAMS, identity, later_defaults, params_identity
from bench.methods.table import METHODS, Param
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).with_name("golden_keys.json")
SPECS = sorted(str(p.relative_to(REPO)) for p in REPO.glob("sweeps/**/*.toml"))


def plan_keys(spec: str) -> dict:
    plan = make_plan(load_sweep(REPO / spec))
    keys = sorted(j.key for j in plan.jobs)
    return {
        "teachers": [t.key for t in plan.teachers],
        "augments": [a.key for a in plan.augments],
        "outputs": stable_hash(sorted(o.key for o in plan.outputs)),
        "jobs": len(keys),
        "jobs_hash": stable_hash(keys),
        "first_job": plan.jobs[0].key,
    }


def test_every_shipped_spec_has_pinned_keys():
    assert sorted(json.loads(GOLDEN.read_text())) == SPECS, "a spec was added or removed: pin its keys"


@pytest.mark.parametrize("spec", SPECS)
def test_the_keys_of_a_shipped_spec_do_not_change(spec, monkeypatch):
    monkeypatch.chdir(REPO)  # the shipped specs name data relative to the repository, where they are run
    assert plan_keys(spec) == json.loads(GOLDEN.read_text())[spec]


def test_the_defaults_keys_take_for_granted_are_pinned():
    """Fields added after the first keys are left out of a key at their default: changing that
    default would silently change what stored keys mean."""
    assert later_defaults(TaskSpec, TrainSpec, AugmentSpec) == {
        "TaskSpec": {"views": 0, "vocab_size": 1024, "teacher_topk": 64, "lambada": None},
        "TrainSpec": {"optimizer": "adamw", "momentum": 0.9, "schedule": "linear", "milestones": (0.5, 0.75)},
        "AugmentSpec": {},
    }
    later_params = {
        n: {k: p.default for k, p in m.params.items() if k not in ORIGINAL_PARAMS[n]} for n, m in METHODS.items()
    }
    assert later_params == {
        "kd": {},
        "kd-primary": {},
        "tinybert": {"ild_lr": None},
        "distilbert": {"layers": None},
        "lm-kd": {},
    }


def test_a_new_field_at_its_default_leaves_keys_unchanged_and_set_makes_new_ones():
    spec = TrainSpec(model="mlp", epochs=3)
    grown = dataclasses.make_dataclass(
        "TrainSpec", [("new_knob", int, dataclasses.field(default=3))], bases=(TrainSpec,), frozen=True
    )
    assert identity(grown(model="mlp", epochs=3)) == identity(spec)
    assert identity(grown(model="mlp", epochs=3, new_knob=4)) == {**identity(spec), "new_knob": 4}
    # an original field is in the key even at its default
    assert "epochs" in identity(TrainSpec(model="mlp")) and "optimizer" not in identity(TrainSpec(model="mlp"))


def test_a_new_method_parameter_at_its_default_leaves_keys_unchanged():
    kd = METHODS["kd"]
    grown = dataclasses.replace(kd, params={**kd.params, "gamma": Param(0.25, 0.0, 1.0, "a new knob")})
    assert params_identity(grown, {**grown.defaults()}) == params_identity(kd, kd.defaults())
    assert params_identity(grown, {**grown.defaults(), "gamma": 0.5}) == {**kd.defaults(), "gamma": 0.5}
    plugin = dataclasses.replace(kd, name="my-kd")  # not in the snapshot: every parameter is keyed
    assert params_identity(plugin, {"temperature": 2.0, "alpha": 0.5}) == {"temperature": 2.0, "alpha": 0.5}


if __name__ == "__main__":
    json.dump({s: plan_keys(s) for s in SPECS}, sys.stdout, indent=1, sort_keys=True)
