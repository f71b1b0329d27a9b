"""DistilBERT-style task distillation with k teachers (Ilichev et al. 2021, 3.3).

The student is the PRIMARY teacher with every other layer (layers 0, 2, 4, ...), as DistilBERT
was initialised from BERT. Loss: ``alpha*CE + (1-alpha)*T^2*KL(mean of the k teachers' cached
logits) + cos_weight * (1 - cos(h_S, h_T))``, the cosine term between the last hidden states of
the student and of the primary teacher (computed online), averaged over real tokens.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from bench.features import forward_features
from bench.losses import cosine_hidden_loss, kd_loss
from bench.teachers import load_teacher_model
from bench.training import set_seed, train


def every_other_layer(teacher: nn.Module) -> nn.Module:
    """A copy of a ``SequenceClassifier`` keeping encoder layers 0, 2, 4, ... and everything else."""
    from transformers import AutoModelForSequenceClassification

    from bench.nets import SequenceClassifier

    config = copy.deepcopy(teacher.hf.config)
    keep = list(range(0, config.num_hidden_layers, 2))
    config.num_hidden_layers = len(keep)
    student = AutoModelForSequenceClassification.from_config(config)
    prefix = f"{teacher.hf.base_model_prefix}.encoder.layer."
    state = {}
    for name, value in teacher.hf.state_dict().items():
        if name.startswith(prefix):
            index, rest = name[len(prefix):].split(".", 1)
            if int(index) not in keep:
                continue
            name = f"{prefix}{keep.index(int(index))}.{rest}"
        state[name] = value.clone()
    student.load_state_dict(state)
    return SequenceClassifier(student)


def train_distilbert(ctx: Any) -> nn.Module:
    """Initialise from the primary teacher, then train with CE + KD + cosine hidden-state loss."""
    set_seed(ctx.seed)
    teacher = load_teacher_model(ctx.teachers_root, ctx.data.name, ctx.primary, ctx.data.shape, ctx.device)
    student = every_other_layer(teacher).to(ctx.device)
    if ctx.spec.freeze_embeddings:
        for p in student.hf.base_model.embeddings.parameters():
            p.requires_grad_(False)
    target = torch.from_numpy(ctx.teacher_logits["train"]).to(ctx.device)
    t, alpha, gamma = ctx.params["temperature"], ctx.params["alpha"], ctx.params["cos_weight"]

    def loss(model: nn.Module, batch: dict, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        s = forward_features(model, batch, scores=False)
        with torch.no_grad():
            h_t = forward_features(teacher, batch, scores=False).hidden[-1]
        kd = kd_loss(s.logits, target[idx.to(ctx.device)], labels, t, alpha)
        return kd + gamma * cosine_hidden_loss(s.hidden[-1], h_t, batch["attention_mask"])

    ctx.fit.update(train(student, ctx.data.splits["train"], ctx.spec, ctx.seed, loss, ctx.device))
    return student
