"""DistilBERT-style task distillation with k teachers (Ilichev et al. 2021, 3.3, eq. 8 and 9).

The student starts from ``student.pretrained`` when it is set: the paper initialises every student
from the published general model distilbert-base-uncased. Without it the student is the PRIMARY
teacher cut to the layers ``layers`` (Sanh et al.'s extraction [0, 2, 4, 7, 9, 11] for a 12-layer
teacher, every other layer otherwise), as DistilBERT itself was initialised from BERT; this is the
offline choice of the CPU specs. Loss: ``alpha*CE + (1-alpha)*T^2*KL(mean of the k teachers'
cached logits) + cos_weight * (1 - cos(h_S, h_T))``, the cosine term between the last hidden states
of the student and of the primary teacher (computed online), averaged over real tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.models.builders import MODELS
from bench.models.features import forward_features
from bench.models.losses import cosine_hidden_loss, kd_loss
from bench.models.nets import SequenceClassifier
from bench.training.loop import set_seed, train
from bench.training.teachers import load_teacher_model

SANH_LAYERS = (0, 2, 4, 7, 9, 11)  # transformers' examples/distillation/scripts/extract_distilbert.py


def default_layers(depth: int) -> tuple[int, ...]:
    """Sanh et al.'s teacher layers for a 12-layer teacher, every other layer for any other depth."""
    return SANH_LAYERS if depth == 12 else tuple(range(0, depth, 2))


def primary_layers(teacher: SequenceClassifier, layers: Sequence[int] | None = None) -> SequenceClassifier:
    """A copy of a ``SequenceClassifier`` keeping encoder ``layers`` (default: ``default_layers``)
    and everything else (embeddings, pooler, classifier)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(teacher.hf.config)
    keep = list(default_layers(config.num_hidden_layers) if layers is None else layers)
    if max(keep) >= config.num_hidden_layers:
        raise ValueError(
            f"method.layers {keep}: the teacher has {config.num_hidden_layers} layers "
            f"(indices 0..{config.num_hidden_layers - 1})"
        )
    config.num_hidden_layers = len(keep)
    student = AutoModelForSequenceClassification.from_config(config)
    prefix = f"{teacher.hf.base_model_prefix}.encoder.layer."
    state = {}
    for name, value in teacher.hf.state_dict().items():
        if name.startswith(prefix):
            index, rest = name[len(prefix) :].split(".", 1)
            if int(index) not in keep:
                continue
            name = f"{prefix}{keep.index(int(index))}.{rest}"
        state[name] = value.clone()
    student.load_state_dict(state)
    return SequenceClassifier(student)


def initial_student(ctx: Any, teacher: SequenceClassifier) -> SequenceClassifier:
    """The student before distillation: ``student.pretrained`` weights or the primary's layers."""
    if ctx.spec.pretrained:
        student = MODELS["bert"].build(ctx.spec, ctx.data.shape)
        width, teacher_width = student.hf.config.hidden_size, teacher.hf.config.hidden_size
        if width != teacher_width:
            raise ValueError(
                f"student.pretrained {ctx.spec.pretrained!r} has hidden size {width}, the teacher "
                f"{teacher_width}; the cosine loss needs equal widths"
            )
        return student
    return primary_layers(teacher, ctx.params.get("layers"))


def train_distilbert(ctx: Any) -> nn.Module:
    """Initialise the student, then train with CE + KD (k-teacher mean) + cosine loss to the primary."""
    set_seed(ctx.seed)
    teacher = load_teacher_model(ctx.teachers_root, ctx.data.name, ctx.primary, ctx.data.shape, ctx.device)
    student = initial_student(ctx, teacher).to(ctx.device)
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
