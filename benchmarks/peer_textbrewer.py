"""A peer: the same distillation job run by TextBrewer and by bench, interleaved (issue 20, item 5).

The job: SST-2 (from ``../shared/data/glue``: 512 training sentences, 256 dev sentences, 64
tokens at most), 6 teachers fine-tuned from the offline MiniLM (alias ``all-minilm-l6-v2``, 6
layers, width 384; one epoch, trained once by ``bench run --teachers-only`` and kept in the work
folder), a 2-layer BERT student (width 128, random init), KD at T = 2, alpha = 0.5, 2 epochs of
batch 32 (32 steps), AdamW, linear decay, clipping at 1.0, 1 torch thread on both sides.

  ours     bench's own job function (``bench.engines.runners.run_distill``, in this process, as a
           worker runs it): load the k teachers' cached logits, average them, train, evaluate
           on dev; its record's ``timings.total``.
  theirs   ``benchmarks/peer/textbrewer_job.py`` in TextBrewer's virtual environment: load the k
           teachers' transformers folders (bench's ``hf/``), build the same student, train it
           with ``MultiTeacherDistiller`` (k = 6: the 6 teachers run forward on every batch) or
           ``BasicDistiller`` (k = 1), evaluate on dev; timed inside the subprocess (no
           interpreter start-up, no imports). It trains on the very batches bench's job uses
           (same examples, order and padding, made here beforehand: their collation is not
           in its time, it is in ours).

Pairs run interleaved (ours k=1, ours k=6, theirs k=1, theirs k=6, then the next pair); the first
round warms caches and is dropped. Prints per-pair ratios and their min / median / max:
theirs k=6 / ours k=6 (target >= 10) and ours k=6 / ours k=1 (target <= 1.05).

TextBrewer's environment (once; torch from the local wheel, as the README installs it):

    python3 -m venv /work/textbrewer-venv && /work/textbrewer-venv/bin/pip install torch==2.13.0 \
        && /work/textbrewer-venv/bin/pip install textbrewer transformers

    .venv/bin/python benchmarks/peer_textbrewer.py [--pairs 5] [--peer-python /work/textbrewer-venv/bin/python]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PEER_JOB = REPO / "benchmarks" / "peer" / "textbrewer_job.py"
DATA = (REPO.parent / "shared" / "data" / "glue").resolve()
STUDENT = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}

SPEC = f"""name = "peer-textbrewer"
teachers = 6
repeats = 1

[task]
name = "sst2"
data = "{DATA}"
tokenizer = "all-minilm-l6-v2"
max_length = 64
train_subset = 512
eval_subset = 256

[teacher]
model = "bert"
pretrained = "all-minilm-l6-v2"
epochs = 1
batch_size = 32
lr = 5e-5
seed = 42

[student]
model = "bert"
params = {json.dumps(STUDENT).replace('":', '" =')}
epochs = 2
batch_size = 32
lr = 1e-3
seed = 100

[method]
name = "kd"
temperature = 2.0
alpha = 0.5

[run]
devices = ["cpu"]
jobs_per_device = 1
threads_per_job = 1
"""


def peer_batches(data, spec, seed: int) -> dict:  # noqa: ANN001 - bench's TaskData and TrainSpec
    """The batches bench's training loop draws for this job (same generator, order, skips and
    padding as ``bench.training.loop.train``), with labels, and its evaluation batches."""
    split = data.splits["train"]
    rng, n, train = np.random.default_rng(seed), len(split), []
    for _ in range(spec.epochs):
        order = rng.permutation(n)
        for b in range(0, n, spec.batch_size):
            idx = order[b : b + spec.batch_size]
            if len(idx) >= 2:
                train.append({**split.batch(idx), "labels": torch.from_numpy(split.labels[idx]).long()})
    dev = data.splits[data.eval_splits[0]]
    evals = [
        {**dev.batch(np.arange(b, min(b + 256, len(dev)))), "labels": torch.from_numpy(dev.labels[b : b + 256]).long()}
        for b in range(0, len(dev), 256)
    ]
    return {"train": train, "dev": evals}


def peer_job(folder: Path, job, data, seed: int) -> dict:  # noqa: ANN001 - a bench DistillJob and TaskData
    """The JSON the TextBrewer side reads for ``job``: teachers' folders, student, settings, batches."""
    from bench.core.config import train_spec  # lazy: bench is importable only once the work folder is set

    spec = train_spec(job.config["student"], seed)
    batches = folder / f"batches-{seed}.pt"
    if not batches.exists():
        torch.save(peer_batches(data, spec, seed), batches)
    params = job.config["method"]["params"]
    return {
        "teachers": [str(folder / "teachers" / "sst2" / key / "hf") for key in job.teacher_keys],
        "student_config": {**STUDENT, "vocab_size": data.shape.vocab_size, "num_labels": data.shape.num_labels},
        "seed": seed,
        "freeze_embeddings": spec.freeze_embeddings,
        "lr": spec.lr,
        "weight_decay": spec.weight_decay,
        "max_grad_norm": spec.max_grad_norm,
        "temperature": params["temperature"],
        "alpha": params["alpha"],
        "threads": 1,
        "batches": str(batches),
    }


def theirs(peer_python: str, path: Path) -> dict:
    """Run the TextBrewer job described by ``path`` in its environment; its timings."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [peer_python, str(PEER_JOB), str(path)], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(name: str, values: list[float], target: str) -> str:
    """One line: the ratio's values, min / median / max, and its target."""
    return (
        f"{name}: median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f}; "
        f"{', '.join(f'{v:.2f}' for v in values)}) target {target}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--peer-python", default="/work/textbrewer-venv/bin/python")
    ap.add_argument("--workdir", default="/tmp/bench-peer-textbrewer", help="kept: the teachers are trained once")
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "peer.toml"
    spec_path.write_text(SPEC)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.cli", "run", str(spec_path), "--teachers-only", "--quiet", "--no-report"]
    subprocess.run(cmd, cwd=folder, check=True)
    print(f"teachers ready in {time.perf_counter() - t0:.0f} s (trained once, then reused)")
    os.chdir(folder)
    from bench.driver.run import distill_payload  # lazy: after chdir, like a worker in its project folder
    from bench.engines import runners
    from bench.plan.jobs import make_plan
    from bench.spec.load import load_sweep

    plan = make_plan(load_sweep(spec_path))
    picks = {k: next(j for j in plan.jobs if j.k == k and j.primary is None) for k in (1, 6)}
    data = runners.load_task(picks[6].config, ".cache/bench")
    peer_paths = {}
    for k, job in picks.items():
        peer_paths[k] = folder / f"peer-k{k}.json"
        peer_paths[k].write_text(json.dumps(peer_job(folder, job, data, job.config["seed"])))
    rows: list[dict] = []
    for pair in range(args.pairs + 1):  # round 0 warms the caches (teacher logits, page cache) and is dropped
        row = {}
        for k, job in picks.items():
            payload = dataclasses.replace(
                distill_payload(plan, job).dispatched(1, "bench", "cpu", 0.0), record_path=str(folder / f"r{k}.json")
            )
            rec = runners.run_distill(payload, torch.device("cpu"))
            row[f"ours{k}"], row[f"ours{k}_acc"] = rec["timings"]["total"], rec["score"]
        for k in picks:
            got = theirs(args.peer_python, peer_paths[k])
            row[f"theirs{k}"], row[f"theirs{k}_train"], row[f"theirs{k}_acc"] = (
                got["total"],
                got["train"],
                got["accuracy"],
            )
        if pair:
            rows.append(row)
            print(
                f"pair {pair}: ours k=1 {row['ours1']:.2f} s, k=6 {row['ours6']:.2f} s; "
                f"TextBrewer k=1 {row['theirs1']:.2f} s (training {row['theirs1_train']:.2f}), "
                f"k=6 {row['theirs6']:.2f} s (training {row['theirs6_train']:.2f}); dev accuracy ours "
                f"{row['ours1_acc']:.3f}/{row['ours6_acc']:.3f}, "
                f"TextBrewer {row['theirs1_acc']:.3f}/{row['theirs6_acc']:.3f}",
                flush=True,
            )
    print(f"SST-2 512/256, 6 MiniLM teachers, 2-layer BERT student, 32 steps of 32, 1 thread, {args.pairs} pairs")
    print(summary("TextBrewer k=6 / ours k=6", [r["theirs6"] / r["ours6"] for r in rows], ">= 10"))
    print(summary("ours k=6 / ours k=1", [r["ours6"] / r["ours1"] for r in rows], "<= 1.05"))
    print(summary("TextBrewer k=1 / ours k=1", [r["theirs1"] / r["ours1"] for r in rows], "(none)"))
    print(summary("TextBrewer k=6 / TextBrewer k=1", [r["theirs6"] / r["theirs1"] for r in rows], "(none)"))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
