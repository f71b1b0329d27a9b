"""The one training loop every recipe uses, prediction and evaluation."""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import numpy as np
import torch

from bench.tasks import Split, TaskData, score


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run is a function of its seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


LossFn = Callable[[torch.nn.Module, dict, torch.Tensor, torch.Tensor], torch.Tensor]


def logits_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
    """Adapt ``fn(logits, example_indices, labels)`` to the training loop's loss signature."""
    return lambda model, batch, idx, labels: fn(model(**batch), idx, labels)


def train(model: torch.nn.Module, split: Split, spec: Any, seed: int, loss_fn: LossFn,
          device: torch.device, extra_params: list | None = None) -> dict:
    """Train ``model`` on ``split`` for ``spec.epochs`` with AdamW and a linear warmup/decay schedule.

    ``loss_fn(model, batch, example_indices, labels)`` gives the loss; indices let a method look
    up per-example targets (cached teacher logits). ``extra_params`` (e.g. projections of
    intermediate-layer losses) are trained with the model. Returns step count and seconds.
    """
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    n = len(split)
    batches_per_epoch = max(1, n // spec.batch_size + (n % spec.batch_size > 1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(spec.epochs * batches_per_epoch, spec.warmup_ratio))
    rng = np.random.default_rng(seed)
    labels_all = torch.from_numpy(split.labels)
    steps, start = 0, time.perf_counter()
    for _ in range(spec.epochs):
        order = rng.permutation(n)
        for b in range(0, n, spec.batch_size):
            idx = order[b:b + spec.batch_size]
            if len(idx) < 2:  # batch norm cannot train on one example
                continue
            batch = {k: v.to(device, non_blocking=True) for k, v in split.batch(idx).items()}
            idx_t = torch.from_numpy(idx)
            loss = loss_fn(model, batch, idx_t, labels_all[idx_t].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if spec.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
            opt.step()
            sched.step()
            steps += 1
    return {"steps": steps, "seconds": time.perf_counter() - start}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """The model's logits on every example of ``split`` (in order), as float32."""
    model.to(device).eval()
    out = []
    for b in range(0, len(split), batch_size):
        idx = np.arange(b, min(b + batch_size, len(split)))
        batch = {k: v.to(device) for k, v in split.batch(idx).items()}
        out.append(model(**batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def evaluate(data: TaskData, model: torch.nn.Module, device: torch.device) -> dict:
    """Metrics of the task on each evaluation split: {split: {metric: value}}."""
    scores = {}
    for name in data.eval_splits:
        split = data.splits[name]
        preds = predict_logits(model, split, device).argmax(axis=1)
        scores[name] = score(data.name, split.labels, preds)
    return scores
