"""run.precision: bf16/fp16 forward passes under torch autocast, losses and teacher caches in
float32, the precision in job and teacher keys only when it is not fp32 (fp32 sweeps keep the keys
they had), and in every record and teacher meta."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import bench_cli, digits_spec, records

from bench.cli import main
from bench.core.config import RunSpec
from bench.core.keys import later_defaults
from bench.driver.run import distill_payload, teacher_payload
from bench.engines.runners import run_distill, run_teacher
from bench.models.losses import kd_loss
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.tasks.base import Split
from bench.training import loop
from bench.training.loop import cpu_autocast_supported, logits_loss, precision_scope, train
from bench.training.teachers import load_meta, load_outputs

REPO = Path(__file__).resolve().parent.parent
GOLDEN = json.loads(Path(__file__).with_name("golden_keys.json").read_text())
CPU = torch.device("cpu")


def _plan(spec: str, precision: str):
    sweep = load_sweep(REPO / spec)
    return make_plan(dataclasses.replace(sweep, run=dataclasses.replace(sweep.run, precision=precision)))


@pytest.mark.parametrize("spec", ["sweeps/quickstart.toml", "sweeps/paper/sst2-tinybert.toml"])
def test_fp32_keeps_the_pinned_keys_and_bf16_makes_new_ones(spec, monkeypatch):
    monkeypatch.chdir(REPO)  # shipped specs name data relative to the repository
    golden = GOLDEN[spec]
    fp32, bf16 = _plan(spec, "fp32"), _plan(spec, "bf16")
    assert [t.key for t in fp32.teachers] == golden["teachers"]
    assert fp32.jobs[0].key == golden["first_job"]
    assert all("precision" not in j.config for j in (*fp32.teachers, *fp32.jobs, *fp32.outputs))

    assert not {t.key for t in bf16.teachers} & set(golden["teachers"])
    assert not {j.key for j in bf16.jobs} & {j.key for j in fp32.jobs}
    assert len(bf16.jobs) == golden["jobs"]
    assert all(j.config["precision"] == "bf16" for j in (*bf16.teachers, *bf16.jobs, *bf16.outputs))
    # augmentation makes data with its own model at fp32: shared by every precision
    assert [a.key for a in bf16.augments] == golden["augments"]
    if bf16.outputs:
        assert not {o.key for o in bf16.outputs} & {o.key for o in fp32.outputs}
    assert _plan(spec, "fp16").teachers[0].key not in {t.key for t in bf16.teachers}


def test_the_default_precision_keys_take_for_granted_is_pinned():
    assert later_defaults(RunSpec)["RunSpec"]["precision"] == "fp32"


def test_an_unknown_precision_is_one_line_naming_the_field(project, capsys):
    path = digits_spec(project, run='precision = "bf61"')
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(path) in err and "run.precision" in err and "fp32, bf16, fp16" in err and "did you mean 'bf16'" in err


def test_fp16_on_cpu_is_refused_where_torch_cannot_autocast_to_it(project, capsys, monkeypatch):
    path = digits_spec(project, run='precision = "fp16"')
    assert main(["plan", str(path)]) == (0 if cpu_autocast_supported("fp16") else 2)
    capsys.readouterr()
    monkeypatch.setattr(loop, "cpu_autocast_supported", lambda name: False)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "run.precision" in err and "cannot autocast to float16 on CPU" in err


def _tiny_split(n: int = 64, features: int = 6, classes: int = 3) -> Split:
    rng = np.random.default_rng(0)
    return Split(labels=rng.integers(classes, size=n), x=rng.normal(size=(n, features)).astype(np.float32))


def _spec():
    from bench.core.config import TrainSpec

    return TrainSpec(model="mlp", epochs=2, batch_size=16, lr=0.01)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_train_runs_the_forward_pass_at_the_precision_and_the_loss_in_float32(precision, dtype):
    raw, seen, losses = [], [], []
    model = _Net()
    model.register_forward_hook(lambda _m, _inp, out: raw.append(out.dtype))

    def fn(logits, idx, labels):
        seen.append(logits.dtype)
        loss = kd_loss(logits, torch.zeros_like(logits), labels, 2.0, 0.5)
        losses.append(loss.dtype)
        return loss

    with precision_scope(precision, CPU):
        fit = train(model, _tiny_split(), _spec(), 0, logits_loss(fn), CPU)
    assert fit["steps"] == 8
    assert set(raw) == {dtype}  # the model ran at the precision
    assert set(seen) == set(losses) == {torch.float32}  # the loss did not
    assert model.lin.weight.dtype == torch.float32  # weights stay float32 (autocast, not a cast model)
    assert not torch.is_autocast_enabled("cpu")  # the scope is closed


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_fp16_on_cpu_trains_without_a_scaler_and_fp16_on_cuda_gets_one():
    if cpu_autocast_supported("fp16"):
        raw = []
        model = _Net()
        model.register_forward_hook(lambda _m, _inp, out: raw.append(out.dtype))
        with precision_scope("fp16", CPU):
            train(model, _tiny_split(), _spec(), 0, logits_loss(lambda lg, i, y: kd_loss(lg, lg, y, 1.0, 1.0)), CPU)
        assert set(raw) == {torch.float16}
        assert torch.isfinite(model.lin.weight).all()
    with precision_scope("fp16", CPU):
        assert loop._grad_scaler(CPU) is None
    for name, scaled in (("fp16", True), ("bf16", False), ("fp32", False)):
        with precision_scope(name, torch.device("cpu")):  # the scope's state, read as train reads it
            assert (loop._grad_scaler(torch.device("cuda")) is not None) == scaled


def test_a_bf16_digits_job_runs_in_bf16_and_records_it(project):
    """Teacher and student jobs of a tiny real digits sweep, in this process: every Linear layer
    produced bfloat16, the teacher's cached logits are float32, meta and record say bf16."""
    plan = make_plan(load_sweep(digits_spec(project, n=1, train_subset=200, run='precision = "bf16"')))
    dtypes: set = set()

    def hook(module, _inp, out):
        if isinstance(module, torch.nn.Linear):
            dtypes.add(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        meta = run_teacher(teacher_payload(plan, plan.teachers[0]).dispatched(1, "cpu#0", "cpu", 0.0), CPU)
        record = run_distill(distill_payload(plan, plan.jobs[0]).dispatched(1, "cpu#0", "cpu", 0.0), CPU)
    finally:
        handle.remove()
    assert dtypes == {torch.bfloat16}
    key = plan.teachers[0].key
    assert meta["precision"] == load_meta("teachers", "digits", key)["precision"] == "bf16"
    assert {a.dtype for a in load_outputs("teachers", "digits", key).values()} == {np.dtype(np.float32)}
    assert record["precision"] == record["config"]["precision"] == "bf16"
    assert math.isfinite(record["score"]) and 0 <= record["score"] <= 1


def test_a_bf16_sweep_finishes_and_its_records_say_bf16(project):
    spec = digits_spec(project, n=1, train_subset=200, run='precision = "bf16"')
    proc = bench_cli("run", str(spec), "--no-report", "--quiet", cwd=project)
    assert proc.returncode == 0, proc.stderr
    recs = records(project / "results" / "tiny")
    assert len(recs) == 1
    assert all(r["status"] == "ok" and r["precision"] == "bf16" for r in recs.values())
    assert all(math.isfinite(s) for r in recs.values() for m in r["scores"].values() for s in m.values())
    plan = make_plan(load_sweep(spec))
    assert set(recs) == {j.key for j in plan.jobs}
    for t in plan.teachers:
        assert load_meta(project / "teachers", "digits", t.key)["precision"] == "bf16"
