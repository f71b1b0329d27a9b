"""Logit matching (Ba & Caruana 2014): ``alpha * CE + (1 - alpha) * MSE(student logits, mean teacher logits)``.

A whole distillation method in one file, added to bench by an entry point in the group
``bench.methods`` (pyproject.toml); docs/extending.md walks through it.
"""

from __future__ import annotations

from bench.methods.context import DistillContext
from bench.methods.table import Method, Param


def train_logit_mse(ctx: DistillContext):
    import torch
    import torch.nn.functional as F

    from bench.models.builders import MODELS
    from bench.training.loop import logits_loss, set_seed, train

    set_seed(ctx.seed)  # the student's initialisation depends on the repeat's seed only
    model = MODELS[ctx.spec.model].build(ctx.spec, ctx.data.shape)
    target = torch.from_numpy(ctx.teacher_logits["train"]).to(ctx.device)  # mean of the k teachers, cached
    alpha = ctx.params["alpha"]

    def loss(logits, idx, labels):
        t = target[idx.to(ctx.device)]
        return alpha * F.cross_entropy(logits, labels) + (1 - alpha) * F.mse_loss(logits, t)

    ctx.fit.update(train(model, ctx.data.splits["train"], ctx.spec, ctx.seed, logits_loss(loss), ctx.device))
    return model


METHOD = Method(
    name="logit-mse",
    needs_primary=False,
    params={"alpha": Param(0.0, 0.0, 1.0, "weight of the hard-label cross-entropy")},
    run=train_logit_mse,
    doc="logit matching to the k-teacher mean (Ba & Caruana 2014)",
    convention="alpha*CE(y) + (1-alpha)*MSE(z_s, mean_k z_t), mean over batch and classes",
)
