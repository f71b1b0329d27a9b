"""TinyBERT task-specific distillation (Jiao et al. 2019) with k teachers (Ilichev et al. 2021, 3.2).

Stage 1, intermediate-layer distillation (ILD), from the PRIMARY teacher only, computed online:
embedding MSE (E_S W_e vs E_T), hidden-state MSE per mapped layer (H_S W_h vs H_T, layer map
g(m) = m * L_T / L_S) and attention-score MSE (pre-softmax, averaged over heads); W_e and W_h
are learnt projections, present only where the widths differ. Padded positions are excluded
from every MSE. ILD runs at the constant rate ``ild_lr`` (TinyBERT's code: 5e-5, no warmup, no
decay) when set, else at student.lr.
Stage 2, prediction-layer distillation (PLD), at student.lr: soft cross-entropy at temperature T
against the mean of the k teachers' cached logits, averaged over batch and classes as TinyBERT's
task_distill.py does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from bench.models.builders import MODELS
from bench.models.features import forward_features
from bench.models.losses import attention_mse, layer_map, masked_mse, soft_cross_entropy
from bench.training.loop import logits_loss, set_seed, train
from bench.training.teachers import load_teacher_model


def _projection(width_s: int, width_t: int) -> nn.Module:
    return nn.Identity() if width_s == width_t else nn.Linear(width_s, width_t)


def ild_loss(
    student: nn.Module, teacher: nn.Module, batch: dict, w_e: nn.Module, w_h: nn.Module, mapping: list[int]
) -> torch.Tensor:
    """Embedding + hidden-state + attention-score losses of one batch (stage 1)."""
    s = forward_features(student, batch, scores=True)
    with torch.no_grad():
        t = forward_features(teacher, batch, scores=True)
    mask = batch["attention_mask"]
    tok = mask[:, :, None]
    loss = masked_mse(w_e(s.hidden[0]), t.hidden[0], tok)
    for m in range(1, len(mapping)):
        loss = loss + masked_mse(w_h(s.hidden[m]), t.hidden[mapping[m]], tok)
        loss = loss + attention_mse(s.scores[m - 1], t.scores[mapping[m] - 1], mask)
    return loss


def train_tinybert(ctx: Any) -> nn.Module:
    """ILD from the primary teacher for ``ild_epochs``, then PLD for ``student.epochs``."""
    set_seed(ctx.seed)
    student = MODELS[ctx.spec.model].build(ctx.spec, ctx.data.shape).to(ctx.device)
    split = ctx.data.splits["train"]
    ild_epochs = int(ctx.params["ild_epochs"])
    if ild_epochs > 0:
        teacher = load_teacher_model(ctx.teachers_root, ctx.data.name, ctx.primary, ctx.data.shape, ctx.device)
        cs, ct = student.hf.config, teacher.hf.config
        mapping = layer_map(cs.num_hidden_layers, ct.num_hidden_layers)
        w_e = _projection(cs.hidden_size, ct.hidden_size).to(ctx.device)
        w_h = _projection(cs.hidden_size, ct.hidden_size).to(ctx.device)
        extra = list(w_e.parameters()) + list(w_h.parameters())
        # TinyBERT's task_distill.py: the ILD stage runs at a constant rate (BertAdam schedule 'none')
        ild_spec = dataclasses.replace(
            ctx.spec, epochs=ild_epochs, lr=ctx.params.get("ild_lr", ctx.spec.lr), schedule="constant", warmup_ratio=0.0
        )
        fit = train(
            student,
            split,
            ild_spec,
            ctx.seed,
            lambda model, batch, idx, y: ild_loss(model, teacher, batch, w_e, w_h, mapping),
            ctx.device,
            extra_params=extra,
        )
        ctx.fit["ild_seconds"], ctx.fit["ild_steps"] = fit["seconds"], fit["steps"]
        del teacher
    target = torch.from_numpy(ctx.teacher_logits["train"]).to(ctx.device)
    t = ctx.params["temperature"]
    fit = train(
        student,
        split,
        ctx.spec,
        ctx.seed + 1,
        logits_loss(lambda logits, idx, y: soft_cross_entropy(logits, target[idx.to(ctx.device)], t)),
        ctx.device,
    )
    ctx.fit.update(pld_seconds=fit["seconds"], steps=fit["steps"] + ctx.fit.get("ild_steps", 0))
    return student
