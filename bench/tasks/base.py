"""What every task is made of: splits of arrays with their batching (dynamic padding, crop/flip
training views), a task's data, and the classification metrics.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.core.errors import UserError
from bench.models.builders import Shape

# Data sets read from the Hugging Face hub need ``datasets``, an optional extra (pyproject: hub).
HUB_EXTRA = "pip install -e '.[hub]'"

# Training views of a 32x32 image (standard CIFAR augmentation): a 32x32 crop of the image padded
# by 4 pixels (9 x 9 offsets), mirrored or not: 162 views in all, view code = flip*81 + dy*9 + dx.
PAD = 4


ALL_VIEWS = 2 * (2 * PAD + 1) ** 2


def crop_flip(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Views ``codes`` of images ``x`` (N, C, H, W): zero-padded by PAD, cropped, maybe mirrored."""
    side = 2 * PAD + 1
    padded = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    h, w = x.shape[2:]
    out = np.empty_like(x)
    for row, code in enumerate(codes):
        flip, rest = divmod(int(code), side * side)
        dy, dx = divmod(rest, side)
        view = padded[row, :, dy : dy + h, dx : dx + w]
        out[row] = view[:, :, ::-1] if flip else view
    return out


@dataclass(frozen=True)
class Split:
    """One split: labels plus either dense inputs ``x`` or ragged token ids (flat + offsets).

    Images may be stored as uint8 with ``norm`` = (mean, std) per channel, applied per batch.
    A training split may have ``views``: per example, the codes of the augmented views it is
    trained on (a finite set, so that teacher outputs can be cached per (example, view)).
    """

    labels: np.ndarray
    x: np.ndarray | None = None
    ids: np.ndarray | None = None
    types: np.ndarray | None = None
    offsets: np.ndarray | None = None
    norm: tuple | None = None
    views: np.ndarray | None = None  # (N, V) view codes in [0, ALL_VIEWS)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_views(self) -> int:
        """Views per example (0: the examples are used as they are)."""
        return 0 if self.views is None else self.views.shape[1]

    def batch(self, idx: np.ndarray, view: np.ndarray | None = None) -> dict:
        """Model inputs for the examples ``idx`` as torch tensors (text padded to the batch's longest);
        with ``view`` (one view number per example, < n_views), the augmented images."""
        import torch

        if self.x is not None:
            x = self.x[idx]
            if view is not None:
                assert self.views is not None  # a view is asked for only when n_views > 0
                x = crop_flip(x, self.views[idx, view])
            if self.norm is not None:
                mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in self.norm)
                x = (x.astype(np.float32) / 255.0 - mean) / std
            return {"x": torch.from_numpy(np.ascontiguousarray(x))}
        assert self.offsets is not None and self.ids is not None and self.types is not None  # no x: a text split
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        lengths = ends - starts
        width = int(lengths.max())
        ids = np.zeros((len(idx), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, (s, e) in enumerate(zip(starts, ends)):
            n = e - s
            ids[row, :n] = self.ids[s:e]
            types[row, :n] = self.types[s:e]
            mask[row, :n] = 1
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.from_numpy(types),
        }


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its splits (``train`` plus the evaluation splits, the first of which gives the
    headline score), the model shape, and for text tasks the tokenizer that made the ids (saved
    with transformers models, ``bench.training.export``)."""

    name: str
    splits: dict
    shape: Shape
    eval_splits: tuple
    tokenizer: Any = None  # a transformers tokenizer (GLUE) or a ``tokenizers.Tokenizer`` (lm); None: no text
    text_bytes: dict = field(default_factory=dict)  # LM: split -> UTF-8 bytes of the tokens it predicts


def hub_datasets_installed() -> bool:
    """Whether ``datasets`` can be imported (asked without importing it: it takes seconds)."""
    return importlib.util.find_spec("datasets") is not None


def hub_datasets() -> Any:
    """The ``datasets`` module, for the tasks that read a data set from the hub (no local
    ``task.data``); without it installed, a UserError in one line saying how to get it or do without."""
    if not hub_datasets_installed():
        raise UserError(
            "task.data: reading a data set from the Hugging Face hub needs the Python package 'datasets', "
            f"which is not installed; expected {HUB_EXTRA} or a local task.data"
        )
    import datasets  # lazy: an optional extra, and seconds to import; only hub data sets need it

    return datasets


def _subset(n: int, size: int | None, seed: int) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def metric_mcc(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def metric_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    return float(np.mean(labels == preds))


def metric_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, zero_division=0))
