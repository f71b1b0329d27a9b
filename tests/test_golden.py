"""Golden runs: one tiny real training run per built-in method (its teachers, then one student, as
a worker runs them, at 1 torch thread on the CPU), whose numbers are pinned bit for bit in
tests/golden.json: each teacher's and the student's scores (a float's repr, exact) and a sha256 of their
trained weights. They define ``bench.core.numerics.NUMERICS_VERSION``: a change that moves any of
them changes what bench computes for an unchanged config, so it bumps the version (records and
teachers of two versions must not mix in one sweep) and re-pins the values:

    BENCH_GOLDEN_UPDATE=1 python -m pytest tests/test_golden.py

which refuses to write moved values under an unchanged version. The specs below are part of the
pins: never edit them (a new golden run is a new entry). The tiny BERT models stay at the majority
class on their 32 dev sentences, so their scores move little; their weights pin them to the bit.
The values hold for the torch and CPU kind golden.json names (``pinned_with``): another torch
release, or a CPU with other vector instructions, may round differently."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import pytest
import torch
from helpers import GLUE

from bench.core.numerics import NUMERICS_VERSION
from bench.driver.run import distill_payload, teacher_payload
from bench.engines import runners
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep

GOLDEN = Path(__file__).with_name("golden.json")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UPDATE = os.environ.get("BENCH_GOLDEN_UPDATE") == "1"

DIGITS = """
name = "golden-{method}"
teachers = 2
[task]
name = "digits"
train_subset = 200
[teacher]
model = "mlp"
params = {{ hidden = [16] }}
epochs = 8
batch_size = 32
lr = 0.05
seed = 10
[student]
model = "mlp"
params = {{ hidden = [8] }}
epochs = 8
batch_size = 32
lr = 0.05
seed = 100
[method]
name = "{method}"
"""

BERT = """
name = "golden-{method}"
teachers = 2
[task]
name = "cola"
data = "{glue}"
tokenizer = "all-minilm-l6-v2"
max_length = 24
train_subset = 64
eval_subset = 32
[teacher]
model = "bert"
params = {{ num_hidden_layers = 2, hidden_size = 24, num_attention_heads = 2, intermediate_size = 32 }}
epochs = 2
batch_size = 16
lr = 1e-3
seed = 7
[student]
model = "bert"
{student}
epochs = 2
batch_size = 16
lr = 1e-3
seed = 100
[method]
name = "{method}"
"""
TINYBERT_STUDENT = (
    "params = { num_hidden_layers = 1, hidden_size = 12, num_attention_heads = 2, intermediate_size = 16 }"
)

LM = """
name = "golden-lm-kd"
teachers = 2
[task]
name = "lm"
data = "{data}/lm-corpora/tinyshakespeare.txt"
vocab_size = 300
max_length = 16
train_subset = 48
eval_subset = 16
teacher_topk = 8
[teacher]
model = "gpt"
params = {{ n_layer = 1, n_embd = 16, n_head = 2 }}
epochs = 1
batch_size = 16
lr = 3e-3
seed = 7
[student]
model = "gpt"
params = {{ n_layer = 1, n_embd = 8, n_head = 2 }}
epochs = 1
batch_size = 16
lr = 3e-3
seed = 100
[method]
name = "lm-kd"
temperature = 2.0
alpha = 0.5
"""

SPECS = {
    "kd": DIGITS.format(method="kd"),
    "kd-primary": DIGITS.format(method="kd-primary"),
    "tinybert": BERT.format(method="tinybert", glue=GLUE, student=TINYBERT_STUDENT),
    "distilbert": BERT.format(method="distilbert", glue=GLUE, student=""),
    "lm-kd": LM.format(data=DATA),
}
NEEDS = {"tinybert": GLUE, "distilbert": GLUE, "lm-kd": DATA / "lm-corpora"}


def _digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _exact(scores: dict) -> dict:
    """The scores as JSON keeps them: a float's repr, which reads back as the same float, bit for bit."""
    return {split: {m: float(v) for m, v in sorted(ms.items())} for split, ms in sorted(scores.items())}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def golden_run(method: str, folder: Path, monkeypatch: pytest.MonkeyPatch, warm: bool = False) -> dict:
    """Train the golden run of ``method`` in ``folder``: its teachers, then the student with k = 2
    (primary: teacher 1 where the method has one), each as a worker runs it; what is pinned. With
    ``warm``, the student's job follows the worker's warm-up for it (``engines.runners.warm_up``:
    data, a model built and given a first training step), as the first job of a fresh worker does."""
    from safetensors.torch import load_file

    spec = folder / f"{method}.toml"
    spec.write_text(SPECS[method])
    plan = make_plan(load_sweep(spec))
    cpu = torch.device("cpu")
    teachers = []
    for t in plan.teachers:
        meta = runners.run_teacher(teacher_payload(plan, t).dispatched(1, "cpu#0", "cpu", 0.0), cpu)
        weights = load_file(folder / "teachers" / plan.sweep.task.name / t.key / "model.safetensors")
        teachers.append({"scores": _exact(meta["scores"]), "weights": _digest(weights)})
    job = next(j for j in plan.jobs if j.k == 2 and j.primary in (None, 1))
    trained = {}
    real = runners.finish_distill

    def spy(job, ctx, model, *args, **kwargs):  # the trained student, before its evaluation
        trained["weights"] = _digest(model.state_dict())
        return real(job, ctx, model, *args, **kwargs)

    monkeypatch.setattr(runners, "finish_distill", spy)
    payload = distill_payload(plan, job).dispatched(1, "cpu#0", "cpu", 0.0)
    if warm:
        monkeypatch.setattr(runners, "_WARM", set())  # this process may have warmed up for another test
        assert runners.warm_up(payload, cpu) > 0
    record = runners.run_distill(payload, cpu)
    assert record["status"] == "ok" and record["threads"] == 1 and record["numerics"] == NUMERICS_VERSION
    return {"teachers": teachers, "student": {"scores": _exact(record["scores"]), "weights": trained["weights"]}}


def _pinned() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {"numerics": None, "runs": {}}


def _where() -> dict:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}


@pytest.mark.parametrize("method", list(SPECS))
def test_golden_run(method, project, monkeypatch, one_thread):
    if method in NEEDS and not NEEDS[method].is_dir():
        pytest.skip(f"{NEEDS[method]} not present")
    got = golden_run(method, project, monkeypatch)
    pinned = _pinned()
    want = pinned["runs"].get(method)
    if UPDATE:
        if want is not None and want != got and pinned["numerics"] == NUMERICS_VERSION:
            pytest.fail(
                f"golden run {method!r} moved but NUMERICS_VERSION is still {NUMERICS_VERSION}: bump it in "
                "bench/core/numerics.py before re-pinning"
            )
        if pinned["numerics"] != NUMERICS_VERSION:
            pinned = {"numerics": NUMERICS_VERSION, "runs": {}}  # a new version: every run is pinned again
        pinned["runs"][method] = got
        pinned["pinned_with"] = _where()
        GOLDEN.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
        return
    assert want is not None, f"golden run {method!r} is not pinned: run BENCH_GOLDEN_UPDATE=1 pytest {__file__}"
    here, there = _where(), pinned.get("pinned_with")
    if there != here:
        pytest.skip(f"pinned with {there}, here {here}: another torch or CPU kind rounds differently")
    assert pinned["numerics"] == NUMERICS_VERSION, (
        f"tests/golden.json holds the runs of numerics {pinned['numerics']}, bench is at {NUMERICS_VERSION}: "
        f"re-pin them (BENCH_GOLDEN_UPDATE=1 pytest {__file__})"
    )
    if got != want:
        moved = [
            f"{who} {what}"
            for who, g, w in [
                *((f"teacher {i}", g, w) for i, (g, w) in enumerate(zip(got["teachers"], want["teachers"]))),
                ("student", got["student"], want["student"]),
            ]
            for what in ("scores", "weights")
            if g[what] != w[what]
        ]
        pytest.fail(
            f"the golden run of {method!r} moved ({', '.join(moved)}; student scores {got['student']['scores']}, "
            f"pinned {want['student']['scores']}): this is a numerics change; bump NUMERICS_VERSION in "
            f"bench/core/numerics.py (now {NUMERICS_VERSION}) and re-pin with BENCH_GOLDEN_UPDATE=1"
        )


@pytest.mark.parametrize("method", ["kd", "tinybert"])
def test_a_warm_worker_computes_the_golden_numbers(method, project, monkeypatch, one_thread):
    """A job's numbers depend on its config only: the warm-up a worker runs before its first job
    (a model built and trained one step: random draws, kernels, optimizer state) changes none."""
    if method in NEEDS and not NEEDS[method].is_dir():
        pytest.skip(f"{NEEDS[method]} not present")
    pinned = _pinned()
    want = pinned["runs"].get(method)
    if want is None:
        pytest.skip(f"golden run {method!r} not pinned yet")
    if pinned.get("pinned_with") != _where():
        pytest.skip(f"pinned with {pinned.get('pinned_with')}, here {_where()}")
    assert golden_run(method, project, monkeypatch, warm=True) == want
