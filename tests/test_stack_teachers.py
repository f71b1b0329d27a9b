"""Stacked teachers (``run.stack`` on an image task at fp32): a sweep's teachers trained as one
batched model are stored as they would be alone (the same files, sha256 sums checked, the same
meta fields plus ``stack``), with scores and weights equal up to the order of floating-point
operations; text tasks, other precisions and ``stack = 1`` train them one by one."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import GLUE, bench_cli, digits_spec
from safetensors.numpy import load_file

from bench.core.contracts import JobPayload
from bench.driver.run import teacher_payload, teacher_stack_items
from bench.engines.queue import Item
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.training.teachers import check_teacher, load_meta, teacher_dir

TEXT_TASK = 'name = "sst2"\ndata = "{glue}"\ntokenizer = "all-minilm-l6-v2"'
TOLERANCE = 1e-4  # largest weight difference after 15 steps: float order only (measured here: 0, bit for bit)


def _teachers(folder, run: str) -> dict[str, dict]:
    folder.mkdir()
    spec = digits_spec(folder, n=3, r=1, run=run)
    proc = bench_cli("run", str(spec), "--teachers-only", "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    root = folder / "teachers"
    return {key.name: load_meta(root, "digits", key.name) for key in (root / "digits").iterdir()}


def test_stacked_teachers_are_stored_as_they_would_be_alone(project):
    """Three teachers on two slots: a stack of two and one alone (as many stacks as slots); each
    stacked teacher has the files, checksums and meta fields of its twin trained alone, plus
    ``stack``, and the same score and weights up to float order."""
    alone = _teachers(project / "alone", "")
    stacked = _teachers(project / "stacked", "stack = 3")
    assert set(alone) == set(stacked) and len(alone) == 3
    sizes = sorted(m.get("stack", {}).get("size", 1) for m in stacked.values())
    assert sizes == [1, 2, 2] and all("stack" not in m for m in alone.values())
    for key, meta in stacked.items():
        twin = alone[key]
        assert check_teacher(project / "stacked" / "teachers", "digits", key) is None
        assert set(meta) - set(twin) == ({"stack"} if "stack" in meta else set()) and set(twin) <= set(meta)
        assert set(meta["files"]) == set(twin["files"]) and meta["steps"] == twin["steps"]
        assert set(meta["timings"]) == set(twin["timings"]) and meta["seed"] == twin["seed"]
        assert abs(meta["score"] - twin["score"]) <= 0.01  # float order only
        a = load_file(str(teacher_dir(project / "alone" / "teachers", "digits", key) / "model.safetensors"))
        b = load_file(str(teacher_dir(project / "stacked" / "teachers", "digits", key) / "model.safetensors"))
        assert a.keys() == b.keys() and max(float(np.abs(a[k] - b[k]).max()) for k in a) < TOLERANCE
        if "stack" in meta:
            assert meta["stack"]["index"] in (0, 1) and meta["stack"]["train_seconds"] > 0


def _items(project, run: str, text: bool = False) -> tuple[list[Item], list[Item]]:
    spec = digits_spec(project, n=4, r=1, run=run)
    if text:  # the same sweep on SST-2 (a text task: padded per batch, never stacked)
        text_spec = spec.read_text().replace('name = "digits"', TEXT_TASK.format(glue=GLUE))
        spec.write_text(re.sub(r'model = "mlp"\nparams = .*\n', 'model = "bert"\n', text_spec))
    plan = make_plan(load_sweep(spec))
    items = [Item(key=t.key, kind="teacher", payload=teacher_payload(plan, t)) for t in plan.teachers]
    return items, teacher_stack_items(plan, items)


def test_the_driver_stacks_teachers_only_where_it_may(project):
    """Four teachers on two slots with stack = 4: two stacks of two, whose payload crosses the
    wire whole; stack = 1, bf16 and a text task leave them one by one."""
    items, out = _items(project, "stack = 4")
    assert [len(i.jobs()) for i in out] == [2, 2] and [j.key for i in out for j in i.jobs()] == [i.key for i in items]
    for item in out:
        back = JobPayload.from_wire(json.loads(json.dumps(item.payload.to_wire())))
        assert back == item.payload and {m.kind for m in back.members} == {"teacher"} and item.deps == ()
    for run, text in (("", False), ('stack = 4\nprecision = "bf16"', False), ("stack = 4", True)):
        items, out = _items(project, run, text)
        assert out == items and len(items) == 4


def test_a_stack_of_mixed_kinds_is_refused(project):
    items, out = _items(project, "stack = 4")
    wire = out[0].payload.to_wire()
    student = {**wire["members"][0], "kind": "distill"}
    with pytest.raises(ValueError, match="all of one kind"):
        JobPayload.from_wire({**wire, "members": [wire["members"][1], student]})
    with pytest.raises(ValueError, match="all of one kind"):
        JobPayload.from_wire({**wire, "members": [{**m, "kind": "augment"} for m in wire["members"]]})
