"""Stacked students (``run.stack``): students trained together as one batched model end as they
would alone, up to the order of floating-point operations; a diverging student fails alone; a
stack that fails as a whole costs its jobs no attempt and they run alone; the spec checks the value."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import bench_cli, digits_spec, records, with_sitecustomize

from bench.core.config import TaskSpec, TrainSpec
from bench.core.contracts import JobPayload
from bench.core.errors import SpecError
from bench.driver.rerun import compare_scores
from bench.driver.run import _stack_item, distill_payload, stack_items
from bench.engines.queue import Item, Scheduler
from bench.models.losses import kd_loss
from bench.models.nets import MLP
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.tasks.digits import load_digits
from bench.training.loop import Diverged, set_determinism, set_seed, train
from bench.training.stack import StackLoss, table_loss, train_stacked

TOLERANCE = 1e-5  # largest weight difference after 40 steps: float order only (measured: about 1e-7)


def _loss(logits: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return kd_loss(logits, t, labels, 4.0, 0.5)


def test_a_stack_trains_each_student_as_it_would_train_alone(tmp_path):
    """Same seeds, data orders and targets: weights equal to rounding; a student whose targets
    turn NaN diverges at the step its run alone reports, and the others are untouched."""
    set_determinism(True)
    try:
        data = load_digits(TaskSpec(name="digits", train_subset=300), tmp_path)
        split = data.splits["train"]
        spec = TrainSpec(model="mlp", params={"hidden": [16]}, epochs=8, batch_size=64, lr=0.01)
        rng = np.random.default_rng(0)
        targets = [torch.from_numpy(rng.normal(size=(len(split), 10)).astype(np.float32)) for _ in range(3)]
        targets[1][123] = float("nan")  # student 1 meets it in its first epoch
        seeds = [0, 1, 2]

        def build(seed: int) -> MLP:
            set_seed(seed)
            return MLP(64, [16], 10)

        alone, diverged_at = [], None
        for s, t in zip(seeds, targets):
            model = build(s)
            try:
                train(
                    model, split, spec, s, table_loss(StackLoss((t,), _loss), torch.device("cpu")), torch.device("cpu")
                )
            except Diverged as e:
                diverged_at = e.step
            alone.append(model)
        stacked = [build(s) for s in seeds]
        fits = train_stacked(
            stacked, split, spec, seeds, [StackLoss((t,), _loss) for t in targets], torch.device("cpu")
        )
    finally:
        set_determinism(False)
    assert diverged_at is not None and [f["diverged_at"] for f in fits] == [None, diverged_at, None]
    assert fits[0]["steps"] == 8 * 5  # 300 examples: 5 batches of 64 or more than one example an epoch
    for i in (0, 2):
        a, b = alone[i].state_dict(), stacked[i].state_dict()
        assert max((a[k] - b[k]).abs().max().item() for k in a) < TOLERANCE


def test_the_driver_groups_compatible_jobs_in_even_stacks(project):
    """Stacks of at most n in plan order, as many as the slots when there are fewer, a multiple of
    the slots otherwise; each waits for its members' teachers; stack = 1 changes nothing."""
    for stack, sizes in (("1", [1] * 14), ("4", [4, 4, 3, 3]), ("6", [4, 4, 3, 3]), ('"auto"', [7, 7])):
        plan = make_plan(load_sweep(digits_spec(project, n=3, r=2, run=f"stack = {stack}")))
        items = [Item(key=j.key, kind="distill", deps=j.deps, payload=distill_payload(plan, j)) for j in plan.jobs]
        out = stack_items(plan, items)
        assert [len(i.jobs()) for i in out] == sizes
        assert [j.key for i in out for j in i.jobs()] == [j.key for j in plan.jobs]
        for item in out:
            assert set(item.deps) == {d for j in item.jobs() for d in j.deps}
            if item.members:  # the payload crosses the wire whole
                back = JobPayload.from_wire(json.loads(json.dumps(item.payload.to_wire())))
                assert back == item.payload and [m.key for m in back.members] == [j.key for j in item.jobs()]


def _stack(project) -> tuple[Item, list]:
    plan = make_plan(load_sweep(digits_spec(project, n=2, r=1, run="stack = 3")))
    items = [Item(key=j.key, kind="distill", deps=(), payload=distill_payload(plan, j)) for j in plan.jobs]
    return _stack_item(plan, items), items


def test_a_stack_member_that_fails_fails_alone(project):
    failed: list = []
    stack, items = _stack(project)
    sched = Scheduler([stack], set(), 1, failed.append, lambda counts: None)
    assert sched.next() is stack
    replies = {
        items[0].key: {"status": "ok"},
        items[1].key: {"status": "failed", "kind": "diverged", "step": 7, "error": "training diverged"},
        items[2].key: {"status": "failed", "kind": "error", "error": "RuntimeError: boom"},
    }
    stack.attempts = 1
    sched.finish(stack, True, None, replies)
    assert sched.result.done == [items[0]] and failed == [items[1]] and items[1].step == 7
    assert sched.next() is items[2] and items[2].attempts == 1  # retried alone
    sched.finish(items[2], True)
    assert sched.next() is None and sched.result.done == [items[0], items[2]]


def test_a_stack_that_fails_as_a_whole_costs_its_jobs_no_attempt(project):
    stack, items = _stack(project)
    sched = Scheduler([stack], set(), 0, lambda item: None, lambda counts: None)
    sched.next()
    sched.finish(stack, False, "worker process died", {items[0].key: {"status": "ok"}})  # its record was written
    assert sched.result.unstacked == [(stack.key, "worker process died")] and sched.result.done == [items[0]]
    rest = [sched.next(), sched.next()]
    assert rest == items[1:] and all(i.attempts == 0 for i in rest)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", "got 0"), ('"all"', "got 'all'"), ("true", "got True"), ("5000", "expected a value <= 4,096")],
)
def test_a_wrong_stack_is_refused(project, value, expected):
    with pytest.raises(SpecError, match=f"run.stack.*{expected}"):
        load_sweep(digits_spec(project, run=f"stack = {value}"))


NAN_FOR_SEED_1 = """
import dataclasses
import bench.methods.table as table

kd = table.METHODS.builtin["kd"]


def setup(ctx):
    model, loss = kd.stack_setup(ctx)
    if ctx.seed == 1:
        loss.targets[0][:] = float("nan")
    return model, loss


table.METHODS.builtin["kd"] = dataclasses.replace(kd, stack_setup=setup)
"""


def test_a_stacked_sweep_records_what_the_jobs_alone_record(project):
    """The same sweep alone and in stacks of 4: same keys and record fields (plus ``stack``), the
    same scores; students of repeat 1, made to diverge in the stacks only, are recorded diverged
    and the others in their stacks are not affected."""
    alone = digits_spec(project, name="alone", n=3, r=2)
    proc = bench_cli("run", str(alone), "--no-report", "--quiet", cwd=project)
    assert proc.returncode == 0, proc.stderr
    stacked = digits_spec(project, name="stacked", n=3, r=2, run="stack = 4")
    env = with_sitecustomize(project / "hook", NAN_FOR_SEED_1)
    proc = bench_cli("run", str(stacked), "--no-report", "--quiet", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    a, b = records(project / "results" / "alone"), records(project / "results" / "stacked")
    assert set(a) == set(b) and len(a) == 14
    for key, rec in b.items():
        if rec["repeat"] == 1:
            assert rec["status"] == "diverged" and rec["diverged_at_step"] == 0 and rec["score"] is None
            continue
        assert rec["status"] == "ok" and set(rec) - set(a[key]) == {"stack"} and rec["stack"]["size"] in (3, 4)
        assert abs(rec["score"] - a[key]["score"]) <= 0.01  # float order only (here: equal)
        assert rec["fit"]["steps"] == a[key]["fit"]["steps"]


def test_rerun_compares_a_stacked_record_within_the_tolerance():
    old = {"scores": {"dev": {"accuracy": 0.9}}, "stack": {"size": 4, "index": 0}}
    assert compare_scores(old, {"scores": {"dev": {"accuracy": 0.9}}}) == (True, "identical, bit for bit")
    assert compare_scores(old, {"scores": {"dev": {"accuracy": 0.905}}})[0]
    assert not compare_scores(old, {"scores": {"dev": {"accuracy": 0.95}}})[0]
    assert not compare_scores({**old, "stack": None}, {"scores": {"dev": {"accuracy": 0.905}}})[0]  # alone: bit for bit
