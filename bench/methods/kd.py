"""Knowledge distillation (Hinton et al. 2015) from the mean of k teachers' logits.

The k teachers' logits come from the teacher output cache and are averaged once before
training, so a k-teacher step costs the same as a one-teacher step.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.models.builders import MODELS
from bench.models.losses import kd_loss
from bench.training.loop import logits_loss, set_seed, train


def train_kd(ctx: Any) -> torch.nn.Module:
    """Train a fresh student with ``alpha*CE + (1-alpha)*T^2*KL`` against the mean teacher logits."""
    set_seed(ctx.seed)
    model = MODELS[ctx.spec.model].build(ctx.spec, ctx.data.shape)
    target = torch.from_numpy(ctx.teacher_logits["train"]).to(ctx.device)
    t, alpha = ctx.params["temperature"], ctx.params["alpha"]

    def loss(logits: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, target[idx.to(ctx.device)], labels, t, alpha)

    ctx.fit.update(train(model, ctx.data.splits["train"], ctx.spec, ctx.seed, logits_loss(loss), ctx.device))
    return model


def train_kd_primary(ctx: Any) -> torch.nn.Module:
    """KD whose soft target is split between the k-teacher mean and the primary teacher alone."""
    set_seed(ctx.seed)
    model = MODELS[ctx.spec.model].build(ctx.spec, ctx.data.shape)
    mean = torch.from_numpy(ctx.teacher_logits["train"]).to(ctx.device)
    primary = torch.from_numpy(ctx.primary_logits["train"]).to(ctx.device)
    t, alpha, beta = ctx.params["temperature"], ctx.params["alpha"], ctx.params["beta"]

    def loss(logits: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        i = idx.to(ctx.device)
        return (1 - beta) * kd_loss(logits, mean[i], labels, t, alpha) + beta * kd_loss(
            logits, primary[i], labels, t, alpha
        )

    ctx.fit.update(train(model, ctx.data.splits["train"], ctx.spec, ctx.seed, logits_loss(loss), ctx.device))
    return model
