"""What the LM teacher cache keeps and loses: top-K next-token logits instead of the full vocabulary.

For the stored teachers of an LM sweep (default: sweeps/cpu/lm-wikitext.toml; run it first), on
a sample of training positions, in one run:
  - bytes per position of the top-K cache against full float16 / float32 logits;
  - the teacher probability mass outside the top K at T = 1, 2, 4 (what the approximation drops);
  - KL(cached target || exact target) and the total-variation distance per token at T = 1, 2, 4,
    for k = 1 and for k = all the teachers (exact = softmax(mean of the full logits / T);
    cached = bench.lm.union_target, renormalised over the union of the teachers' top K);
  - seconds to build the k-teacher target for the sample (union_target).

    .venv/bin/python benchmarks/lm_topk_cache.py [SPEC] [--positions 20000] [--topk 8 32 128]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.jobs import load_task
from bench.lm import union_target
from bench.plan import make_plan
from bench.spec import load_sweep
from bench.teachers import load_teacher_model

REPO = Path(__file__).resolve().parents[1]


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """Mean over rows of KL(p || q), with 0 * log 0 = 0 (p's support must lie in q's)."""
    p = log_p.exp()
    return float(torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1).mean())


def tv_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """Mean over rows of the total-variation distance."""
    return float(0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1).mean())


def sparse_log_softmax(like: torch.Tensor, ids: np.ndarray, vals: np.ndarray, temp: float) -> torch.Tensor:
    """log softmax(vals / T) placed at ``ids`` (-inf elsewhere; repeated ids keep their finite copy)."""
    dense = torch.full_like(like, -torch.inf).scatter_reduce(
        1, torch.from_numpy(ids).long(), torch.from_numpy(np.asarray(vals, dtype=np.float32)) / temp, "amax")
    return F.log_softmax(dense, -1)


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
    print(f"{'K':>5} {'T':>3} {'tail k=1':>9} {'KL k=1':>8} {'TV k=1':>8} {'KL k=' + kk:>8} {'TV k=' + kk:>8} "
          f"{'union s':>8}")
    for k in args.topk:
        tops = [torch.topk(lg, k, dim=-1) for lg in logits]
        ids = [t.indices.numpy() for t in tops]
        vals = [t.values.half().numpy() for t in tops]
        start = time.perf_counter()
        u_ids, u_vals = union_target(ids, vals)
        seconds = time.perf_counter() - start
        for temp in (1.0, 2.0, 4.0):
            exact1 = F.log_softmax(logits[0] / temp, -1)
            tail = float(1 - exact1.gather(1, torch.from_numpy(ids[0]).long()).exp().sum(-1).mean())
            approx1 = sparse_log_softmax(exact1, ids[0], vals[0], temp)
            exact = F.log_softmax(torch.stack(logits).mean(0) / temp, -1)
            approx = sparse_log_softmax(exact, u_ids, u_vals, temp)
            print(f"{k:>5} {temp:>3g} {tail:9.4f} {kl_rows(approx1, exact1):8.4f} {tv_rows(approx1, exact1):8.4f} "
                  f"{kl_rows(approx, exact):8.4f} {tv_rows(approx, exact):8.4f} {seconds:8.2f}")


if __name__ == "__main__":
    main()
