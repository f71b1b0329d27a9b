"""Knowledge distillation (Hinton et al. 2015) from the mean of k teachers' logits.

The k teachers' logits come from the teacher output cache and are averaged once before
training, so a k-teacher step costs the same as a one-teacher step. Each recipe is a setup (the
fresh student after its seed, and its loss as target tables + a function of their rows) that
``train`` runs alone and ``training.stack.train_stacked`` runs in a stack (``run.stack``).
"""

from __future__ import annotations

from typing import Any

import torch

from bench.models.builders import MODELS
from bench.models.losses import kd_loss
from bench.training.loop import set_seed, train
from bench.training.stack import StackLoss, table_loss


def _student(ctx: Any) -> torch.nn.Module:
    """The run's fresh student: built right after seeding with the run's seed."""
    set_seed(ctx.seed)
    return MODELS[ctx.spec.model].build(ctx.spec, ctx.data.shape)


def _train_alone(ctx: Any, model: torch.nn.Module, loss: StackLoss) -> torch.nn.Module:
    ctx.fit.update(train(model, ctx.data.splits["train"], ctx.spec, ctx.seed, table_loss(loss, ctx.device), ctx.device))
    return model


def setup_kd(ctx: Any) -> tuple[torch.nn.Module, StackLoss]:
    """``alpha*CE + (1-alpha)*T^2*KL`` against the mean teacher logits."""
    model = _student(ctx)
    target = torch.from_numpy(ctx.teacher_logits["train"]).to(ctx.device)
    t, alpha = ctx.params["temperature"], ctx.params["alpha"]

    def loss(logits: torch.Tensor, mean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, mean, labels, t, alpha)

    return model, StackLoss((target,), loss)


def setup_kd_primary(ctx: Any) -> tuple[torch.nn.Module, StackLoss]:
    """KD whose soft target is split between the k-teacher mean and the primary teacher alone."""
    model = _student(ctx)
    mean = torch.from_numpy(ctx.teacher_logits["train"]).to(ctx.device)
    primary = torch.from_numpy(ctx.primary_logits["train"]).to(ctx.device)
    t, alpha, beta = ctx.params["temperature"], ctx.params["alpha"], ctx.params["beta"]

    def loss(logits: torch.Tensor, m: torch.Tensor, p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (1 - beta) * kd_loss(logits, m, labels, t, alpha) + beta * kd_loss(logits, p, labels, t, alpha)

    return model, StackLoss((mean, primary), loss)


def train_kd(ctx: Any) -> torch.nn.Module:
    """Train a fresh student with ``alpha*CE + (1-alpha)*T^2*KL`` against the mean teacher logits."""
    return _train_alone(ctx, *setup_kd(ctx))


def train_kd_primary(ctx: Any) -> torch.nn.Module:
    """KD whose soft target is split between the k-teacher mean and the primary teacher alone."""
    return _train_alone(ctx, *setup_kd_primary(ctx))
