"""Stacked students (``run.stack``): several students of one architecture trained in one process as
one batched model (``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``).

Each student keeps what it would have alone: its initialisation (built by its recipe after its own
``set_seed``), its data order (its own ``numpy`` generator seeded with its seed, drawn in the order
``training.loop.train`` draws it: a permutation per epoch, then a view per example and batch on a
split with training views), its own targets and labels, its own gradient-norm clipping and its own
divergence check. The losses are summed, so each student's gradient is the gradient of its own
loss; AdamW and SGD act element by element, so one optimizer over the stacked tensors updates each
student as its own optimizer would. What differs from a run alone is only the order of
floating-point operations (batched matrix products instead of one product per student), so scores
agree to within rounding, not bit for bit (docs/performance.md, "Stacked students").

Not stackable (``stack_problem`` says why, and the job runs alone): models with active dropout
(vmap would draw other masks than the run alone), text inputs (dynamic padding differs per
student), a precision other than fp32 and a GradScaler.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from bench.tasks.base import Split
from bench.training.loop import DIVERGENCE_CHECK_EVERY, logits_loss, lr_scheduler, optimizer

AUTO_CAP = 64  # run.stack = "auto": at most this many students in one stack
AUTO_MEMORY_SHARE = 0.25  # ... whose estimated memory fits this share of the device's free memory


@dataclass(frozen=True)
class StackLoss:
    """A recipe's loss in a form ``train_stacked`` can batch: this student's target tables (rows
    indexed like ``training.loop.train``'s target indices) and ``fn(logits, *target_rows, labels)``,
    the same function for every student of a stack (the method's parameters are the same)."""

    targets: tuple[torch.Tensor, ...]
    fn: Callable[..., torch.Tensor]


def stack_problem(model: torch.nn.Module, split: Split, precision: str) -> str | None:
    """Why this student cannot be trained in a stack (None: it can)."""
    if precision != "fp32":
        return f"precision {precision} (stacking runs fp32 only)"
    if split.x is None:
        return "text inputs (padded per batch)"
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return "dropout (vmap would draw other masks than the run alone)"
    return None


def _per_student_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each student's whole gradient, shape (students,)."""
    squares = [g.pow(2).flatten(1).sum(1) for g in grads]
    return torch.stack(squares).sum(0).sqrt()


def _clip_per_student(grads: list[torch.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` applied to each student's gradient on its own."""
    norms = _per_student_norm(grads)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def _draws(rngs: list[np.random.Generator], n: int, split: Split, spec) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """One epoch of every student's batches as ``training.loop.train`` draws them for that student
    alone: (example indices, views or None) per step, stacked over students."""
    orders = [rng.permutation(n) for rng in rngs]
    steps = []
    for b in range(0, n, spec.batch_size):
        if min(n, b + spec.batch_size) - b < 2:  # batch norm cannot train on one example (as train skips it)
            continue
        idx = np.stack([order[b : b + spec.batch_size] for order in orders])
        views = None
        if split.n_views:
            views = np.stack([rng.integers(split.n_views, size=idx.shape[1]) for rng in rngs])
        steps.append((idx, views))
    return steps


def train_stacked(
    models: list[torch.nn.Module],
    split: Split,
    spec,
    seeds: list[int],
    losses: list[StackLoss],
    device: torch.device,
) -> list[dict]:
    """Train ``models`` (one architecture, freshly built by their recipes) together on ``split``,
    student i with seed ``seeds[i]`` and loss ``losses[i]``; their weights are written back into
    them. Returns per student ``{"steps", "seconds", "diverged_at"}``: seconds are the stack's
    training seconds divided by its size; ``diverged_at`` is the first step whose loss was not
    finite (None: trained to the end). A diverged student's later updates are discarded with it;
    the others are unaffected (their losses and gradients never mix with its own)."""
    size = len(models)
    for m in models:
        m.to(device).train()
    params, buffers = stack_module_state(models)  # leaves of shape (students, ...)
    base = models[0]
    names = list(params)
    opt = optimizer(spec, [params[k] for k in names])
    n = len(split)
    sched = lr_scheduler(opt, spec, n)
    rngs = [np.random.default_rng(s) for s in seeds]
    labels_all = torch.from_numpy(split.labels)
    fn = losses[0].fn
    # every student's target tables stacked once, (students, rows, ...): one gather a step instead
    # of one per student (its memory is counted in student_bytes)
    tables = [torch.stack([loss.targets[t] for loss in losses]) for t in range(len(losses[0].targets))]
    who = torch.arange(size, device=device)[:, None]
    n_targets = len(tables)

    def one(p: dict, b: dict, x: torch.Tensor, labels: torch.Tensor, *rows: torch.Tensor) -> torch.Tensor:
        logits = functional_call(base, (p, b), (), {"x": x}).float()
        return fn(logits, *rows, labels)

    batched = vmap(one, in_dims=(0, 0, 0, 0) + (0,) * n_targets)
    first_bad = torch.full((size,), -1, dtype=torch.long, device=device)
    steps, start = 0, time.perf_counter()
    for idx, views in (step for _ in range(spec.epochs) for step in _draws(rngs, n, split, spec)):
        flat = split.batch(idx.reshape(-1), None if views is None else views.reshape(-1))["x"]
        x = flat.reshape(size, idx.shape[1], *flat.shape[1:]).to(device, non_blocking=True)
        target = idx if views is None else idx * split.n_views + views
        at = torch.from_numpy(target).to(device)
        rows = [table[who, at] for table in tables]
        labels = labels_all[torch.from_numpy(idx)].to(device)
        loss = batched(params, buffers, x, labels, *rows)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), steps, first_bad)
        if steps % DIVERGENCE_CHECK_EVERY == 0 and bool((first_bad >= 0).all()):
            break  # every student diverged: nothing left to train
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # a sum of independent losses: each student gets its own gradient
        if spec.max_grad_norm > 0:
            _clip_per_student([params[k].grad for k in names], spec.max_grad_norm)
        opt.step()
        sched.step()
        steps += 1
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for i, m in enumerate(models):
            for k, t in {**params, **buffers}.items():
                _tensor(m, k).copy_(t[i])
    bad = first_bad.tolist()
    return [{"steps": steps, "seconds": seconds / size, "diverged_at": None if b < 0 else int(b)} for b in bad]


def _tensor(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer ``name`` of ``model``."""
    module, _, leaf = name.rpartition(".")
    owner = model.get_submodule(module) if module else model
    return getattr(owner, leaf)


def _free_bytes(device: torch.device) -> int:
    """Free memory of the device: CUDA's free memory, or the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def student_bytes(model: torch.nn.Module, split: Split, batch_size: int, target_bytes: int) -> int:
    """Estimated memory of one student in a stack: parameters, gradients and two optimizer moments
    (16 bytes per parameter), 3 x the activations of a batch (outputs of every module in the
    forward pass, kept for backward, and their gradients, with room to spare), and twice its
    targets (``target_bytes``: its own tables and their copy in the stack's, ``train_stacked``)."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() if torch.is_tensor(out) else 0))
        for m in model.modules()
    ]
    try:
        with torch.no_grad():
            model.eval()(**{k: v[:1] for k, v in split.batch(np.arange(1)).items()})
    finally:
        for h in hooks:
            h.remove()
        model.train()
    n_params = sum(p.numel() for p in model.parameters())
    return 16 * n_params + 3 * 4 * sum(sizes) * batch_size + 2 * target_bytes


def auto_size(per_student: int, device: torch.device, cap: int = AUTO_CAP) -> int:
    """``run.stack = "auto"``: as many students as fit in AUTO_MEMORY_SHARE of the device's free
    memory at ``per_student`` bytes each, at most ``cap``, at least 1."""
    return max(1, min(cap, int(_free_bytes(device) * AUTO_MEMORY_SHARE) // max(1, per_student)))


def table_loss(loss: StackLoss, device: torch.device) -> Callable:
    """``loss`` as ``training.loop.train`` takes it for one student alone: the rows of its target
    tables at the step's target indices (``LossFn``)."""
    return logits_loss(lambda logits, idx, labels: loss.fn(logits, *(t[idx.to(device)] for t in loss.targets), labels))
