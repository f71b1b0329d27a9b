"""The one training loop every recipe uses, prediction and evaluation."""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from bench.tasks.base import Split, TaskData
from bench.tasks.table import TASKS, score


def set_determinism(on: bool) -> None:
    """``run.deterministic``: torch's deterministic algorithms (an op without one raises) and,
    for cuBLAS on GPUs, a fixed workspace (CUBLAS_WORKSPACE_CONFIG=:4096:8, set before the first
    matmul of the process); cuDNN autotuning off. Without it a GPU rerun may differ in the last
    bits; CPU runs of this project are deterministic either way."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run is a function of its seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # run.precision -> autocast dtype (fp32: none)
_PRECISION: contextvars.ContextVar[str] = contextvars.ContextVar("precision", default="fp32")


@contextlib.contextmanager
def precision_scope(name: str, device: torch.device) -> Iterator[None]:
    """The scope a job's model runs in at ``run.precision`` ``name``: torch autocast to bfloat16 or
    float16 on the device's type (nothing at fp32), so every forward pass in it (training,
    prediction, a recipe's teacher features) runs in that precision while the weights stay float32.
    ``train`` reads the scope (fp16 on CUDA adds a GradScaler); losses compute in float32 inside
    it (``bench.models.losses``) and ``predict_logits`` returns float32, so the KD convention and
    the teacher caches do not depend on it."""
    token = _PRECISION.set(name)
    try:
        if name == "fp32":
            yield
        else:
            with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[name]):
                yield
    finally:
        _PRECISION.reset(token)


def cpu_autocast_supported(name: str) -> bool:
    """Whether this torch autocasts a CPU matmul to ``name``'s dtype (older builds warn and stay
    in float32 for float16): the spec check refuses fp16 on CPU where it does not."""
    import warnings

    dtype = AUTOCAST_DTYPES[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.autocast("cpu", dtype=dtype):
                return torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == dtype
    except RuntimeError:
        return False


def _grad_scaler(device: torch.device) -> Any:
    """A GradScaler for fp16 on CUDA (float16 gradients underflow without one), else None: bf16 has
    float32's range, and fp16 on CPU runs without one (the spec check allows it where torch can)."""
    if _PRECISION.get() == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def _schedule(spec: Any, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warmup (every schedule), then linear decay to
    0 ("linear"), x0.1 at each milestone fraction of the steps ("step", He et al. 2016) or none
    ("constant", TinyBERT's intermediate-layer stage)."""
    warmup = int(total_steps * spec.warmup_ratio)
    bounds = [int(total_steps * m) for m in spec.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if spec.schedule == "step":
            return 0.1 ** sum(step >= b for b in bounds)
        if spec.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def lr_scheduler(opt: torch.optim.Optimizer, spec: Any, n: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The spec's schedule over its epochs of ``n`` examples (a last batch of one example is skipped)."""
    batches_per_epoch = max(1, n // spec.batch_size + (n % spec.batch_size > 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, _schedule(spec, spec.epochs * batches_per_epoch))


def optimizer(spec: Any, params: list) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


LossFn = Callable[[torch.nn.Module, dict, torch.Tensor, torch.Tensor], torch.Tensor]


def warm_up_step(model: torch.nn.Module, split: Split, spec: Any, device: torch.device) -> None:
    """One forward, backward and optimizer step of a throwaway ``model`` on two examples of
    ``split``, then one forward in eval mode: what a process pays once at its first step (kernel
    and autograd set-up, the optimizer's first step, a CUDA context), paid by a worker's warm-up
    (``engines.runners.warm_up``) so that no job is charged it. Every recipe seeds before it
    builds its model, so this changes no result."""
    model.to(device).train()
    batch = {k: v.to(device) for k, v in split.batch(np.arange(min(2, len(split)))).items()}
    opt = optimizer(spec, [p for p in model.parameters() if p.requires_grad])
    model(**batch).float().sum().backward()
    opt.step()
    with torch.no_grad():
        model.eval()(**batch)


def logits_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
    """Adapt ``fn(logits, example_indices, labels)`` to the training loop's loss signature; the
    logits reach ``fn`` as float32 whatever the precision of the forward pass."""
    return lambda model, batch, idx, labels: fn(model(**batch).float(), idx, labels)  # the loss in float32


class Diverged(RuntimeError):
    """Training produced a non-finite loss: the run has no score (recorded as ``diverged``)."""

    def __init__(self, step: int):
        self.step = step
        super().__init__(f"training diverged: non-finite loss at step {step}")


DIVERGENCE_CHECK_EVERY = 25  # steps between host syncs that look for a non-finite loss


def train(
    model: torch.nn.Module,
    split: Split,
    spec: Any,
    seed: int,
    loss_fn: LossFn,
    device: torch.device,
    extra_params: list | None = None,
) -> dict:
    """Train ``model`` on ``split`` for ``spec.epochs`` with the spec's optimizer and schedule.

    ``loss_fn(model, batch, target_indices, labels)`` gives the loss; the indices let a method look
    up per-example targets (cached teacher logits, laid out as ``predict_logits`` returns them):
    the example index, or on a split with training views ``example * n_views + view``, the view
    drawn for that example at this step. ``extra_params`` (e.g. projections of intermediate-layer
    losses) are trained with the model. Returns step count and seconds. Raises ``Diverged`` with
    the first step whose loss is NaN or infinite (checked on the device, synced every
    ``DIVERGENCE_CHECK_EVERY`` steps and at the end). Inside a ``precision_scope`` the forward
    pass and loss run under its autocast, backward outside it, with a GradScaler for fp16 on CUDA.
    """
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params or [])
    opt = optimizer(spec, params)
    n = len(split)
    sched = lr_scheduler(opt, spec, n)
    rng = np.random.default_rng(seed)
    labels_all = torch.from_numpy(split.labels)
    steps, start = 0, time.perf_counter()
    first_bad = torch.tensor(-1, device=device)
    scaler = _grad_scaler(device)
    for _ in range(spec.epochs):
        order = rng.permutation(n)
        for b in range(0, n, spec.batch_size):
            idx = order[b : b + spec.batch_size]
            if len(idx) < 2:  # batch norm cannot train on one example
                continue
            view, target = None, idx
            if split.n_views:
                view = rng.integers(split.n_views, size=len(idx))
                target = idx * split.n_views + view
            batch = {k: v.to(device, non_blocking=True) for k, v in split.batch(idx, view).items()}
            loss = loss_fn(model, batch, torch.from_numpy(target), labels_all[torch.from_numpy(idx)].to(device))
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), steps, first_bad)
            if steps % DIVERGENCE_CHECK_EVERY == 0 and first_bad.item() >= 0:
                raise Diverged(int(first_bad.item()))
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=False):  # backward outside autocast, as torch advises
                (loss if scaler is None else scaler.scale(loss)).backward()
            if scaler is not None:
                scaler.unscale_(opt)  # clip the true gradients
            if spec.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)  # skipped when the scaled gradients overflowed
                scaler.update()
            sched.step()
            steps += 1
    if first_bad.item() >= 0:
        raise Diverged(int(first_bad.item()))
    return {"steps": steps, "seconds": time.perf_counter() - start}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """The model's logits on every example of ``split`` (in order), as float32; on a split with
    training views, on every (example, view), row ``example * n_views + view``."""
    model.to(device).eval()
    views = max(1, split.n_views)
    out = []
    for b in range(0, len(split), batch_size):
        idx = np.arange(b, min(b + batch_size, len(split)))
        per_view = []
        for v in range(views):
            view = np.full(len(idx), v) if split.n_views else None
            batch = {k: t.to(device) for k, t in split.batch(idx, view).items()}
            per_view.append(model(**batch).float().cpu().numpy())
        out.append(np.stack(per_view, axis=1).reshape(len(idx) * views, -1))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def evaluate(data: TaskData, model: torch.nn.Module, device: torch.device, predictions: dict | None = None) -> dict:
    """Metrics of the task on each evaluation split: {split: {metric: value}}; for tasks scored
    by class predictions, ``predictions`` (when given) receives {split: predicted class per
    example}, for paired example-level statistics."""

    custom = TASKS[data.name].evaluate
    if custom is not None:
        return custom(data, model, device)
    scores = {}
    for name in data.eval_splits:
        split = data.splits[name]
        preds = predict_logits(model, split, device).argmax(axis=1)
        scores[name] = score(data.name, split.labels, preds)
        if predictions is not None:
            predictions[name] = preds
    return scores
