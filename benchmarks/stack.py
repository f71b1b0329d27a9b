"""Stacked students (``run.stack``, issue 20 items 1-2): throughput with and without stacking.

Three measurements, each a ratio of interleaved runs in this one process:
  quickstart  the quickstart's student phase (189 MLP students, its 6 teachers trained first and
              shared): ``bench run`` with run.stack = 1 and = "auto", alternated ``--rounds``
              times; prints the walls, their ratio and how far the scores of the two differ;
  e2e         the whole quickstart sweep (teachers included) with run.stack = "auto" in a fresh
              folder, and the part its teachers take;
  cifar       CIFAR-10 ResNet-8 students, ``--students`` of them trained one after the other
              (``training.loop.train``) and as one stack (``training.stack.train_stacked``) on
              ``--images`` training images: examples per second of each.

    .venv/bin/python benchmarks/stack.py [--rounds 2] [--students 8] [--images 1000] [--skip-cifar]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.core.config import TaskSpec, TrainSpec
from bench.core.records import load_records
from bench.driver.run import run_sweep
from bench.models.losses import kd_loss
from bench.models.nets import CifarResNet
from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.tasks.cifar import load_cifar10
from bench.training.loop import set_seed, train
from bench.training.stack import StackLoss, table_loss, train_stacked

REPO = Path(__file__).resolve().parents[1]


def _sweep(folder: Path, name: str, stack: str, teachers_only: bool = False) -> tuple[float, dict]:
    """Run the quickstart as sweep ``name`` in ``folder`` with run.stack = ``stack``; returns the
    sweep's wall seconds and its scores by job key."""
    sets = (f"name={name!r}".replace("'", '"'), f"run.stack={stack}")
    sweep = load_sweep(REPO / "sweeps" / "quickstart.toml", sets)
    plan = make_plan(sweep)
    start = time.perf_counter()
    run_sweep(plan, quiet=True, teachers_only=teachers_only)
    wall = time.perf_counter() - start
    records = load_records(sweep.results_dir(), jobs=plan.jobs)
    return wall, {k: r.get("score") for k, r in records.items()}


def quickstart(rounds: int) -> None:
    """The student phase alone and stacked, alternated."""
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        os.chdir(tmp)
        teachers, _ = _sweep(Path(tmp), "qs-teachers", "1", teachers_only=True)
        print(f"quickstart teachers (trained once, shared): {teachers:.1f} s")
        walls: dict[str, list[float]] = {"1": [], '"auto"': []}
        scores: dict[str, dict] = {}
        for r in range(rounds):
            for stack in walls:
                wall, scores[stack] = _sweep(Path(tmp), f"qs-{r}-{len(walls[stack])}-{stack.strip(chr(34))}", stack)
                walls[stack].append(wall)
                print(f"round {r}: student phase, run.stack = {stack}: {wall:.2f} s ({len(scores[stack])} records)")
        alone, stacked = (min(w) for w in walls.values())
        print(
            f"student phase: alone {alone:.2f} s, stacked {stacked:.2f} s (best of {rounds}) -> {alone / stacked:.2f}x"
        )
        a, b = scores["1"], scores['"auto"']
        diffs = [abs(a[k] - b[k]) for k in a if a[k] is not None and b.get(k) is not None]
        print(
            f"scores: {sum(d > 0 for d in diffs)} of {len(diffs)} scored pairs differ, "
            f"largest difference {max(diffs):.4f}, "
            f"mean score {np.mean([s for s in a.values() if s is not None]):.4f} alone vs "
            f"{np.mean([s for s in b.values() if s is not None]):.4f} stacked"
        )


def e2e() -> None:
    """The whole quickstart, teachers included, stacked, in a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="bench-stack-e2e-") as tmp:
        os.chdir(tmp)
        teachers, _ = _sweep(Path(tmp), "qs-e2e", '"auto"', teachers_only=True)
        students, _ = _sweep(Path(tmp), "qs-e2e", '"auto"')
    with tempfile.TemporaryDirectory(prefix="bench-stack-e2e-") as tmp:
        os.chdir(tmp)
        whole, _ = _sweep(Path(tmp), "qs-e2e", '"auto"')
    print(
        f"whole quickstart, run.stack = auto, fresh folder: {whole:.1f} s "
        f"(separately: teachers {teachers:.1f} s + students {students:.1f} s)"
    )


def cifar_throughput(
    students: int,
    images: int,
    device: torch.device,
    depth: int = 8,
    stack_sizes: tuple[int, ...] = (),
    rounds: int = 2,
    data: str | Path = REPO.parent / "shared" / "data" / "cifar10",
    cache: Path | None = None,
) -> dict:
    """CIFAR-10 ResNet-``depth`` students (4 crop/flip views, batch 64, SGD, one epoch on
    ``images`` training images) on ``device``: ``students`` of them one after the other, then one
    stack of each size in ``stack_sizes`` (default: ``students``), alternated, best of ``rounds``.
    Returns examples per second alone and per stack size, and the images trained on."""
    cache = cache or Path(tempfile.gettempdir()) / "bench-stack-cifar"
    spec = TaskSpec(name="cifar10", data=str(data), train_subset=images, views=4)
    split = load_cifar10(spec, cache).splits["train"]
    train_spec = TrainSpec(model=f"resnet{depth}", epochs=1, batch_size=64, lr=0.05, optimizer="sgd", max_grad_norm=0.0)
    sizes = stack_sizes or (students,)
    rng = np.random.default_rng(0)
    rows = len(split) * split.n_views
    targets = [  # on the device, as a recipe's stack_setup puts them (bench.methods.kd)
        torch.from_numpy(rng.normal(size=(rows, 10)).astype(np.float32)).to(device)
        for _ in range(max(students, *sizes))
    ]

    def loss(logits: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, t, labels, 4.0, 0.1)

    def build(seed: int) -> torch.nn.Module:
        set_seed(seed)
        return CifarResNet(depth, 10)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def alone() -> float:
        sync()
        start = time.perf_counter()
        for s in range(students):
            train(build(s), split, train_spec, s, table_loss(StackLoss((targets[s],), loss), device), device)
        sync()
        return time.perf_counter() - start

    def stacked(n: int) -> float:
        models = [build(s) for s in range(n)]
        sync()
        start = time.perf_counter()
        train_stacked(models, split, train_spec, list(range(n)), [StackLoss((t,), loss) for t in targets[:n]], device)
        sync()
        return time.perf_counter() - start

    seconds: dict[str, list[float]] = {"alone": [], **{str(n): [] for n in sizes}}
    for _ in range(rounds):
        seconds["alone"].append(alone())
        for n in sizes:
            seconds[str(n)].append(stacked(n))
    best = {k: min(v) for k, v in seconds.items()}
    return {
        "images": len(split),
        "alone_examples_per_s": students * len(split) / best["alone"],
        "stacked_examples_per_s": {n: n * len(split) / best[str(n)] for n in sizes},
        "rounds": rounds,
    }


def cifar(students: int, images: int, threads: int) -> None:
    """ResNet-8 students on CIFAR-10 (4 crop/flip views), one after the other vs one stack, on the CPU."""
    torch.set_num_threads(threads)
    out = cifar_throughput(students, images, torch.device("cpu"))
    alone, stacked = out["alone_examples_per_s"], out["stacked_examples_per_s"][students]
    print(
        f"CIFAR-10 ResNet-8, {students} students x {out['images']} images x 1 epoch, {threads} thread(s): "
        f"alone {alone:.0f} examples/s, stacked {stacked:.0f} examples/s "
        f"-> {stacked / alone:.2f}x (best of 2 each)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--students", type=int, default=8)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-quickstart", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-cifar", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    here = os.getcwd()
    try:
        if not args.skip_quickstart:
            quickstart(args.rounds)
        if not args.skip_e2e:
            e2e()
    finally:
        os.chdir(here)
    if not args.skip_cifar:
        cifar(args.students, args.images, args.threads)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
