"""What the LM teacher cache keeps and loses: top-K next-token logits instead of the full vocabulary.

For the stored teachers of an LM sweep (default: sweeps/cpu/lm-wikitext.toml; run it first), on
a sample of training positions, in one run:
  - bytes per position of the top-K cache against full float16 / float32 logits;
  - the teacher probability mass outside the top K at T = 1, 2, 4;
  - the total-variation distance between the exact KD target (softmax of the mean of the k
    teachers' full logits / T) and the cached one, on the partition {union of the top K's, all
    other tokens}, for k = 1 and k = all teachers, two ways: "dropped" renormalises on the union
    (what a plain top-K cache does), "bucket" keeps the other tokens as one bucket with the cached
    tail logit (what bench does);
  - seconds to build the k-teacher target for the sample (union_target).

    .venv/bin/python benchmarks/lm_topk_cache.py [SPEC] [--positions 20000] [--topk 8 32 64 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.jobs import load_task
from bench.lm import mean_tail, tail_logit, union_target
from bench.plan import make_plan
from bench.spec import load_sweep
from bench.teachers import load_teacher_model

REPO = Path(__file__).resolve().parents[1]


def partition_tv(exact: torch.Tensor, ids: np.ndarray, vals: np.ndarray, tail: np.ndarray | None,
                 temp: float) -> float:
    """Mean TV distance between ``exact`` (rows of probabilities over the vocabulary) and the cached
    target on {the ids of each row, everything else}; ``tail`` None: renormalised on the ids."""
    ids_t = torch.from_numpy(np.asarray(ids)).long()
    vals_t = torch.from_numpy(np.asarray(vals, dtype=np.float32)) / temp
    finite = torch.isfinite(vals_t)
    e_in = exact.gather(1, ids_t) * finite
    e = torch.cat([e_in, (1 - e_in.sum(-1, keepdim=True)).clamp_min(0)], -1)
    if tail is None:
        a = torch.cat([torch.softmax(vals_t, -1), torch.zeros(len(vals_t), 1)], -1)
    else:
        n_other = exact.shape[-1] - finite.sum(-1)
        bucket = torch.log(n_other.clamp_min(1).float()) + torch.from_numpy(np.asarray(tail, np.float32)) / temp
        bucket = torch.where(n_other > 0, bucket, torch.full_like(bucket, -torch.inf))
        a = torch.softmax(torch.cat([vals_t, bucket[:, None]], -1), -1)
    return float(0.5 * (a - e).abs().sum(-1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", default=str(REPO / "sweeps" / "cpu" / "lm-wikitext.toml"))
    ap.add_argument("--positions", type=int, default=20000)
    ap.add_argument("--topk", type=int, nargs="+", default=[8, 32, 128])
    args = ap.parse_args()
    torch.set_num_threads(2)
    sweep = load_sweep(args.spec)
    plan = make_plan(sweep)
    job = plan.teachers[0].config
    data = load_task(job, str(Path(sweep.paths.cache).resolve()))
    train = data.splits["train"]
    n_blocks = max(1, args.positions // sweep.task.max_length)
    idx = np.arange(min(n_blocks, len(train)))
    dev = torch.device("cpu")
    logits = []
    for t in plan.teachers:
        model = load_teacher_model(sweep.paths.teachers, "lm", t.key, data.shape, dev)
        with torch.no_grad():
            logits.append(model(**train.batch(idx)).flatten(0, 1).float())
    vocab = logits[0].shape[-1]
    n = logits[0].shape[0]
    print(f"{len(logits)} teachers of {sweep.name}, vocabulary {vocab}, {n} training positions")
    print(f"bytes per position: full float32 {4 * vocab}, full float16 {2 * vocab}, "
          + ", ".join(f"top-{k} {6 * k} (int32 id + float16 logit)" for k in args.topk))
    kk = str(len(logits))
    print(f"{'K':>5} {'T':>3} {'tail k=1':>9} {'dropped k=1':>12} {'bucket k=1':>11} {'dropped k=' + kk:>12} "
          f"{'bucket k=' + kk:>11} {'union s':>8}")
    for k in args.topk:
        tops = [torch.topk(lg, k, dim=-1) for lg in logits]
        ids = [t.indices.numpy() for t in tops]
        vals = [t.values.half().numpy() for t in tops]
        tails = [tail_logit(lg, t.values).numpy() for lg, t in zip(logits, tops)]
        start = time.perf_counter()
        u_ids, u_vals = union_target(ids, vals)
        seconds = time.perf_counter() - start
        u_tail = mean_tail(tails)
        for temp in (1.0, 2.0, 4.0):
            exact1 = torch.softmax(logits[0] / temp, -1)
            tail = float(1 - exact1.gather(1, torch.from_numpy(ids[0]).long()).sum(-1).mean())
            exact = torch.softmax(torch.stack(logits).mean(0) / temp, -1)
            cells = [partition_tv(exact1, ids[0], vals[0], None, temp), partition_tv(exact1, ids[0], vals[0], tails[0], temp),
                     partition_tv(exact, u_ids, u_vals, None, temp), partition_tv(exact, u_ids, u_vals, u_tail, temp)]
            print(f"{k:>5} {temp:>3g} {tail:9.4f} {cells[0]:12.4f} {cells[1]:11.4f} {cells[2]:12.4f} {cells[3]:11.4f} "
                  f"{seconds:8.2f}")


if __name__ == "__main__":
    main()
