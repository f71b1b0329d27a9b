"""Intermediate features of BERT-family models: hidden states of every layer and the
pre-softmax attention scores (Q K^T / sqrt(d)), which transformers does not return."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from bench.models.nets import SequenceClassifier


@dataclass(frozen=True)
class Features:
    """One forward pass: logits, hidden states (embeddings first) and per-layer attention scores."""

    logits: torch.Tensor
    hidden: tuple  # L + 1 tensors (batch, len, width)
    scores: tuple  # L tensors (batch, heads, len, len), empty when not asked for


def encoder_layers(model: SequenceClassifier) -> nn.ModuleList:
    """The transformer layers of a wrapped transformers encoder (``SequenceClassifier``)."""
    return model.hf.base_model.encoder.layer


def forward_features(model: nn.Module, batch: dict, scores: bool = True) -> Features:
    """Run ``model`` (a ``SequenceClassifier`` over a BERT-family encoder) and collect its features."""
    clf = cast(SequenceClassifier, model)  # as documented (taken as nn.Module: training's loss callbacks get one)
    captured: dict = {}
    handles = []
    if scores:
        for i, layer in enumerate(encoder_layers(clf)):
            att = layer.get_submodule("attention.self")
            for name in ("query", "key"):
                handles.append(
                    getattr(att, name).register_forward_hook(
                        lambda _m, _inp, out, i=i, name=name: captured.__setitem__((i, name), out)
                    )
                )
    try:
        out = clf.hf(**clf.inputs(batch), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    result = []
    if scores:
        config = clf.hf.config
        heads = config.num_attention_heads
        for i in range(len(encoder_layers(clf))):
            q, k = captured[(i, "query")], captured[(i, "key")]
            b, n, width = q.shape
            d = width // heads
            q = q.view(b, n, heads, d).transpose(1, 2)
            k = k.view(b, n, heads, d).transpose(1, 2)
            result.append(q @ k.transpose(-1, -2) / math.sqrt(d))
    return Features(logits=out.logits, hidden=tuple(out.hidden_states), scores=tuple(result))
