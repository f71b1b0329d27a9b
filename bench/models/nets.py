"""Small torch networks for image-like tasks; every model maps a batch dict to logits."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


class MLP(nn.Module):
    """A multi-layer perceptron over flattened inputs."""

    def __init__(self, in_features: int, hidden: list[int], num_labels: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class CNN(nn.Module):
    """Conv-BN-ReLU blocks (the first keeps resolution, later ones halve it), global pool, linear."""

    def __init__(self, in_channels: int, channels: list[int], num_labels: int, dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for i, c in enumerate(channels):
            blocks += [
                nn.Conv2d(width, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
            ]
            width = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_labels))

    def forward(self, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    """A basic residual block. Shortcut where the shape changes: a 1x1 projection, or with
    ``option_a`` (He et al. 2016, CIFAR) stride-2 subsampling with zero-padded extra channels
    (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int, option_a: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin
        self.short = (
            None
            if option_a
            else nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.short is not None:
            return self.short(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = nn.functional.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: a stem, stages of basic blocks (stride 2 from the second), pool, linear."""

    def __init__(self, in_channels: int, widths: list[int], blocks: list[int], num_labels: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_labels)

    def forward(self, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))


class CausalLM(nn.Module):
    """Wraps a transformers causal LM: ``x`` = blocks of max_length + 1 token ids, returns the
    next-token logits at the first max_length positions (batch, max_length, vocab)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf: Any = hf_model  # a transformers model: its config and submodules are unknown to mypy

    def forward(self, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=x[:, :-1].long()).logits


class SequenceClassifier(nn.Module):
    """Wraps a transformers sequence-classification model so that forward returns logits. Batch
    entries the model does not take are dropped (DistilBERT has no token_type_ids)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf: Any = hf_model  # a transformers model: its config and submodules are unknown to mypy
        self.accepts = frozenset(inspect.signature(hf_model.forward).parameters)

    def inputs(self, batch: dict) -> dict:
        """The entries of ``batch`` the wrapped model's forward accepts."""
        return {k: v for k, v in batch.items() if k in self.accepts}

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.hf(**self.inputs(batch)).logits


class CifarResNet(nn.Module):
    """The CIFAR ResNets of He et al. (2016, section 4.2): 6n+2 layers, a 3x3 stem, three stages of
    n blocks with 16/32/64 channels on 32/16/8 pixels, global average pool, linear."""

    def __init__(self, depth: int, num_labels: int, in_channels: int = 3, widths: tuple = (16, 32, 64)):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, option_a=True))
                cin = w
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_labels)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))
