"""Small torch networks for image-like tasks; every model maps a batch dict to logits."""

from __future__ import annotations

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
            blocks += [nn.Conv2d(width, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU()]
            width = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_labels))

    def forward(self, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    """A pre-ResNet basic block with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    """A small ResNet: a stem, stages of basic blocks (stride 2 from the second), pool, linear."""

    def __init__(self, in_channels: int, widths: list[int], blocks: list[int], num_labels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
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


class SequenceClassifier(nn.Module):
    """Wraps a transformers sequence-classification model so that forward returns logits."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.hf(**batch).logits
