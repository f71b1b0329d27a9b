"""On a real CUDA device (``pytest -m gpu``; every test here skips without one): a training step,
autocast at bf16 and fp16 (with its GradScaler) through bench's precision code, a stacked-students
step, NVML energy through ``bench.core.energy`` (with ``pynvml``), and slots mapped to the GPU
(``CUDA_VISIBLE_DEVICES`` per slot) in a real sweep. The same paths are tested on the CPU with
simulated devices and fake counters in test_precision.py, test_stack.py, test_energy.py and
test_queue.py; ``benchmarks/gpu_check.py`` runs this file first on a GPU machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import bench_cli, digits_spec, records

from bench.core.config import TaskSpec, TrainSpec
from bench.core.energy import meter
from bench.engines.queue import make_slots
from bench.models.losses import kd_loss
from bench.models.nets import MLP
from bench.tasks.base import Split
from bench.tasks.digits import load_digits
from bench.training import loop
from bench.training.loop import logits_loss, precision_scope, set_seed, train
from bench.training.stack import StackLoss, table_loss, train_stacked

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch sees none)"),
]

CUDA = torch.device("cuda:0")
STACK_TOLERANCE = 1e-4  # weights, stacked vs alone on the GPU: float order only (CPU: 1e-5, tests/test_stack.py)


def _split(n: int = 128, features: int = 6, classes: int = 3) -> Split:
    rng = np.random.default_rng(0)
    return Split(labels=rng.integers(classes, size=n), x=rng.normal(size=(n, features)).astype(np.float32))


def _spec(epochs: int = 2) -> TrainSpec:
    return TrainSpec(model="mlp", epochs=epochs, batch_size=16, lr=0.01)


def _kd(logits: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return kd_loss(logits, torch.zeros_like(logits), labels, 2.0, 0.5)


def test_a_training_step_runs_on_cuda_and_changes_the_weights():
    set_seed(0)
    model = MLP(6, [16], 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit = train(model, _split(), _spec(), 0, logits_loss(_kd), CUDA)
    assert fit["steps"] == 16
    assert all(p.device.type == "cuda" for p in model.parameters())
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any((after[k].cpu() - before[k]).abs().max() > 0 for k in before)


@pytest.mark.parametrize("precision,dtype,scaled", [("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)])
def test_autocast_runs_the_forward_pass_at_the_precision_on_cuda(precision, dtype, scaled):
    """bench's precision_scope: forward in the precision, loss and weights in float32, and a
    GradScaler exactly for fp16 on CUDA."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    raw, seen = [], []
    set_seed(0)
    model = MLP(6, [16], 3)
    model.register_forward_hook(lambda _m, _inp, out: raw.append(out.dtype))

    def fn(logits, idx, labels):
        seen.append(logits.dtype)
        return _kd(logits, idx, labels)

    with precision_scope(precision, CUDA):
        assert (loop._grad_scaler(CUDA) is not None) == scaled
        fit = train(model, _split(), _spec(), 0, logits_loss(fn), CUDA)
    assert fit["steps"] == 16
    assert set(raw) == {dtype}
    assert set(seen) == {torch.float32}  # logits_loss casts before the loss
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert not torch.is_autocast_enabled("cuda")


def test_a_stack_on_cuda_trains_each_student_as_it_would_train_alone(tmp_path):
    data = load_digits(TaskSpec(name="digits", train_subset=300), tmp_path)
    split = data.splits["train"]
    spec = TrainSpec(model="mlp", params={"hidden": [16]}, epochs=4, batch_size=64, lr=0.01)
    rng = np.random.default_rng(0)
    # on the device, as a recipe's stack_setup puts them (bench.methods.kd)
    targets = [torch.from_numpy(rng.normal(size=(len(split), 10)).astype(np.float32)).to(CUDA) for _ in range(3)]
    seeds = [0, 1, 2]

    def loss(logits: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, t, labels, 4.0, 0.5)

    def build(seed: int) -> MLP:
        set_seed(seed)
        return MLP(64, [16], 10)

    alone = []
    for s, t in zip(seeds, targets):
        model = build(s)
        train(model, split, spec, s, table_loss(StackLoss((t,), loss), CUDA), CUDA)
        alone.append(model)
    stacked = [build(s) for s in seeds]
    fits = train_stacked(stacked, split, spec, seeds, [StackLoss((t,), loss) for t in targets], CUDA)
    assert [f["diverged_at"] for f in fits] == [None, None, None]
    for a_model, b_model in zip(alone, stacked):
        a, b = a_model.state_dict(), b_model.state_dict()
        assert max((a[k].cpu() - b[k].cpu()).abs().max().item() for k in a) < STACK_TOLERANCE


def test_nvml_energy_of_real_gpu_work():
    pytest.importorskip("pynvml", reason="nvidia-ml-py (pynvml) is not installed")
    m = meter("cuda:0", slots_on_device=2)
    if m.nvml is None:
        pytest.skip("this GPU's NVML has no total-energy counter (older than Volta?)")
    a = m.read()
    x = torch.randn(4096, 4096, device=CUDA)
    for _ in range(50):
        x = torch.tanh(x @ x)
    torch.cuda.synchronize()
    e = m.energy(a, m.read())
    assert e["source"] == "nvml"
    assert e["parts"]["gpu_j"] >= 0 and e["joules"] > 0


def test_each_gpu_slot_sees_its_device_in_a_real_sweep(project):
    """Two slots on cuda:0: each worker sees only GPU 0 (CUDA_VISIBLE_DEVICES), its records and
    teachers say cuda:0, and with pynvml their energy is read from NVML."""
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in make_slots(("cuda:0",), 2)] == ["0", "0"]
    spec = digits_spec(project, n=2, r=1)
    proc = bench_cli(
        "run", str(spec), "--no-report", "--quiet", "--devices", "cuda:0", "--jobs-per-device", "2", cwd=project
    )
    assert proc.returncode == 0, proc.stderr
    recs = list(records(project / "results" / "tiny").values())
    assert recs and all(r["status"] == "ok" for r in recs)
    assert {r["device"] for r in recs} == {"cuda:0"}
    assert {r["cuda_visible_devices"] for r in recs} == {"0"}
    assert {r["slot"] for r in recs} <= {"cuda:0#0", "cuda:0#1"}
    meta = json.loads(next((project / "teachers" / "digits").glob("*/meta.json")).read_text())
    assert meta["device"] == "cuda:0"
    try:
        import importlib

        importlib.import_module("pynvml")
    except ImportError:
        return
    if meter("cuda:0").nvml is not None:
        assert {r["energy"]["source"] for r in recs} == {"nvml"}
