"""run.precision on this CPU: the training time of one model at bf16 against fp32.

The harness's own training loop (bench.training.loop.train inside precision_scope), one thread
like one slot, the two precisions alternating within each trial so load drifts hit both:
  cnn   the quickstart's digits teacher (CNN, channels 32/64), --epochs epochs;
  bert  a small random-init BERT (2 layers, width 128, 4 heads, FFN 512) on CoLA, max_length 64,
        --bert-train examples, 1 epoch (needs ../shared/data/glue; skipped without it).
Prints each model's median seconds per precision, the bf16/fp32 time ratio (below 1: bf16 is
faster) and the 1-minute load average before and after. What it says about GPUs: nothing (a
tensor-core GPU is where bf16/fp16 pay off; docs/performance.md).

    .venv/bin/python benchmarks/precision.py [--trials 3] [--epochs 3] [--bert-train 512]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core.config import TaskSpec, TrainSpec
from bench.models.builders import MODELS
from bench.tasks.table import TASKS
from bench.training.loop import logits_loss, precision_scope, set_seed, train

REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "data" / "glue"
CPU = torch.device("cpu")


def _time(spec: TrainSpec, data, precision: str) -> float:
    """Seconds of one training of a fresh model (same seed) at ``precision``."""
    set_seed(0)
    model = MODELS[spec.model].build(spec, data.shape)
    loss = logits_loss(lambda logits, idx, y: F.cross_entropy(logits, y))
    with precision_scope(precision, CPU):
        return float(train(model, data.splits["train"], spec, 0, loss, CPU)["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="CNN epochs")
    ap.add_argument("--bert-train", type=int, default=512, help="CoLA training examples for the BERT")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    cases = {
        "cnn": (
            TrainSpec(model="cnn", params={"channels": [32, 64]}, epochs=args.epochs, batch_size=64, lr=3e-3),
            TASKS["digits"].load(TaskSpec(name="digits"), cache),
        )
    }
    if GLUE.is_dir():
        task = TaskSpec(
            name="cola", data=str(GLUE), tokenizer="all-minilm-l6-v2", max_length=64, train_subset=args.bert_train
        )
        bert = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}
        cases["bert"] = (
            TrainSpec(model="bert", params=bert, epochs=1, batch_size=32, lr=1e-4),
            TASKS["cola"].load(task, cache),
        )
    load_before = os.getloadavg()[0]
    seconds: dict = {name: {"fp32": [], "bf16": []} for name in cases}
    for _ in range(args.trials + 1):  # the first round warms up (kernels, allocator) and is dropped
        for name, (spec, data) in cases.items():
            for precision in ("fp32", "bf16"):
                seconds[name][precision].append(_time(spec, data, precision))
    load_after = os.getloadavg()[0]
    out = {}
    for name, by in seconds.items():
        med = {p: statistics.median(v[1:]) for p, v in by.items()}
        out[name] = {**med, "ratio": med["bf16"] / med["fp32"]}
        print(
            f"{name}: fp32 {med['fp32']:.2f} s, bf16 {med['bf16']:.2f} s; bf16/fp32 time {out[name]['ratio']:.2f} "
            f"(median of {args.trials}, 1 thread)"
        )
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}; {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
