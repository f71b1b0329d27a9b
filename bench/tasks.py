"""Tasks: data sets, their splits and their metrics. The metric belongs to the task.

- ``digits``: scikit-learn's 8x8 digits (embedded, no download), a fixed stratified 60/20/20
  train/dev/test split.
- ``cifar10``: CIFAR-10 from a local folder (JPEG tarball) or the hub; scored on its test split;
  optional finite sets of crop/flip training views (``bench/cifar.py``).
- ``lm``: a text corpus for causal LMs, held-out perplexity and LAMBADA (``bench/lm.py``).
- ``cola`` (Matthews corr.), ``mrpc`` (accuracy and F1), ``sst2`` (accuracy): GLUE, read from a
  folder in the official GLUE TSV layout (``task.data``) or from the Hugging Face hub
  (``nyu-mll/glue``) when no folder is given. Scored on the dev split (GLUE test is unlabeled).

Text is tokenized once per (data, tokenizer, max_length) and cached as flat int arrays; batches
are padded dynamically to their longest sequence.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.cache import load_arrays, save_arrays
from bench.errors import SpecError, UserError
from bench.models import MODELS, Shape, resolve_pretrained


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
        view = padded[row, :, dy:dy + h, dx:dx + w]
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
                x = crop_flip(x, self.views[idx, view])
            if self.norm is not None:
                mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in self.norm)
                x = (x.astype(np.float32) / 255.0 - mean) / std
            return {"x": torch.from_numpy(np.ascontiguousarray(x))}
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
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "token_type_ids": torch.from_numpy(types)}


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its splits (``train`` plus the evaluation splits, the first of which gives the
    headline score) and the model shape."""

    name: str
    splits: dict
    shape: Shape
    eval_splits: tuple


def _subset(n: int, size: int | None, seed: int) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


# --------------------------------------------------------------------------- metrics

def metric_mcc(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def metric_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    return float(np.mean(labels == preds))


def metric_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, zero_division=0))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mcc": metric_mcc, "accuracy": metric_accuracy, "f1": metric_f1,
}


# --------------------------------------------------------------------------- digits

def load_digits(spec: Any, cache_dir: Path) -> TaskData:
    """scikit-learn's 8x8 digits, scaled to [0, 1], split 60/20/20 stratified by ``split_seed``.
    The split arrays are cached in ``cache_dir`` (importing scikit-learn costs a new worker
    process about 0.7 s, far more than its first job's training; benchmarks/queue_efficiency.py)."""
    ident = {"split_seed": spec.split_seed, "train_subset": spec.train_subset, "eval_subset": spec.eval_subset,
             "format": 1}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "digits" / f"digits-{digest}.npz"
    names = ("train", "dev", "test")
    arrays = load_arrays(path)  # None when missing or damaged: built again
    if arrays is None:
        from sklearn.datasets import load_digits as sk_digits
        from sklearn.model_selection import train_test_split

        d = sk_digits()
        x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        y = d.target.astype(np.int64)
        idx = np.arange(len(y))
        train, rest = train_test_split(idx, train_size=0.6, stratify=y, random_state=spec.split_seed)
        dev, test = train_test_split(rest, train_size=0.5, stratify=y[rest], random_state=spec.split_seed)
        arrays = {}
        for name, part, size in zip(names, (train, dev, test), (spec.train_subset, spec.eval_subset, spec.eval_subset)):
            part = np.sort(part)[_subset(len(part), size, spec.split_seed)]
            arrays[f"{name}/x"], arrays[f"{name}/y"] = x[part], y[part]
        save_arrays(path, arrays)
    splits = {name: Split(labels=arrays[f"{name}/y"], x=arrays[f"{name}/x"]) for name in names}
    return TaskData("digits", splits, Shape(num_labels=10, input_shape=(1, 8, 8)), ("dev", "test"))


# --------------------------------------------------------------------------- GLUE

@dataclass(frozen=True)
class GlueFormat:
    folder: str
    hub_config: str
    header: bool
    label_col: int
    text_cols: tuple
    hub_text: tuple


GLUE = {
    "cola": GlueFormat("CoLA", "cola", False, 1, (3,), ("sentence",)),
    "sst2": GlueFormat("SST-2", "sst2", True, 1, (0,), ("sentence",)),
    "mrpc": GlueFormat("MRPC", "mrpc", True, 0, (3, 4), ("sentence1", "sentence2")),
}


def _read_glue_tsv(path: Path, fmt: GlueFormat) -> tuple[list[tuple[str, ...]], np.ndarray]:
    if not path.is_file():
        raise UserError(f"{path}: GLUE file not found; expected the GLUE TSV layout "
                        f"(<data>/{fmt.folder}/train.tsv and dev.tsv)")
    texts, labels = [], []
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if fmt.header:
            next(rows, None)
        for lineno, row in enumerate(rows, start=2 if fmt.header else 1):
            if not row:
                continue
            try:
                texts.append(tuple(row[c] for c in fmt.text_cols))
                labels.append(int(row[fmt.label_col]))
            except (IndexError, ValueError):
                raise UserError(f"{path}:{lineno}: expected a label in column {fmt.label_col + 1} "
                                f"and text in columns {[c + 1 for c in fmt.text_cols]}, got {row!r}") from None
    if not texts:
        raise UserError(f"{path}: expected at least one example (label in column {fmt.label_col + 1}, text in "
                        f"columns {[c + 1 for c in fmt.text_cols]}), the file has none")
    return texts, np.asarray(labels, dtype=np.int64)


def check_glue(spec: Any) -> None:
    """Read a local GLUE folder's files as the loader will, so a bad file stops the run before
    anything is written (the hub is not contacted here)."""
    if spec.data is not None:
        _glue_raw(spec, GLUE[spec.name])


def _glue_raw(spec: Any, fmt: GlueFormat) -> dict[str, tuple[list, np.ndarray]]:
    if spec.data is not None:
        root = Path(spec.data) / fmt.folder
        return {"train": _read_glue_tsv(root / "train.tsv", fmt), "dev": _read_glue_tsv(root / "dev.tsv", fmt)}
    import datasets  # online only: nothing is downloaded on offline machines

    out = {}
    for split, hub_split in (("train", "train"), ("dev", "validation")):
        ds = datasets.load_dataset("nyu-mll/glue", fmt.hub_config, split=hub_split, trust_remote_code=False)
        texts = list(zip(*(ds[c] for c in fmt.hub_text)))
        out[split] = (texts, np.asarray(ds["label"], dtype=np.int64))
    return out


def _source_identity(spec: Any, fmt: GlueFormat) -> dict:
    if spec.data is None:
        return {"hub": f"nyu-mll/glue/{fmt.hub_config}"}
    root = Path(spec.data) / fmt.folder
    return {f.name: [f.stat().st_size, int(f.stat().st_mtime)] for f in sorted(root.glob("*.tsv"))}


def _tokenize(texts: list[tuple[str, ...]], tokenizer: Any, max_length: int) -> dict[str, np.ndarray]:
    columns = list(zip(*texts))
    enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    lengths = np.fromiter((len(s) for s in enc["input_ids"]), dtype=np.int64, count=len(texts))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter((t for s in enc["input_ids"] for t in s), dtype=np.int32, count=int(offsets[-1]))
    types = np.fromiter((t for s in enc["token_type_ids"] for t in s), dtype=np.int8, count=int(offsets[-1]))
    return {"ids": ids, "types": types, "offsets": offsets}


def load_tokenizer(name: str) -> Any:
    """A fast tokenizer from an alias, a local folder or a hub name."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_pretrained(name), trust_remote_code=False)


def glue_texts(spec: Any) -> dict[str, tuple[list, np.ndarray]]:
    """The raw texts and labels of each split, after the spec's fixed subsets."""
    out = {}
    for split, (texts, labels) in _glue_raw(spec, GLUE[spec.name]).items():
        size = spec.train_subset if split == "train" else spec.eval_subset
        keep = _subset(len(labels), size, spec.split_seed)
        out[split] = ([texts[i] for i in keep], labels[keep])
    return out


def text_split(arrays: dict[str, np.ndarray], prefix: str = "") -> Split:
    """A text Split from stored arrays (``{prefix}ids``, ``types``, ``offsets``, ``labels``)."""
    return Split(labels=arrays[f"{prefix}labels"], ids=arrays[f"{prefix}ids"], types=arrays[f"{prefix}types"],
                 offsets=arrays[f"{prefix}offsets"])


def tokenize_split(texts: list[tuple[str, ...]], labels: np.ndarray, tokenizer: Any, max_length: int,
                   prefix: str = "") -> dict[str, np.ndarray]:
    """Tokenized arrays of one split, ready for ``save_arrays`` / ``text_split``."""
    arrays = {f"{prefix}{k}": v for k, v in _tokenize(texts, tokenizer, max_length).items()}
    arrays[f"{prefix}labels"] = np.asarray(labels, dtype=np.int64)
    return arrays


def concat_splits(a: Split, b: Split) -> Split:
    """Examples of ``a`` followed by those of ``b`` (text splits)."""
    return Split(labels=np.concatenate([a.labels, b.labels]), ids=np.concatenate([a.ids, b.ids]),
                 types=np.concatenate([a.types, b.types]),
                 offsets=np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]))


def load_glue(spec: Any, cache_dir: Path) -> TaskData:
    """A GLUE task, tokenized (cached on disk) with the spec's tokenizer."""
    fmt = GLUE[spec.name]
    ident = {"task": asdict(spec), "source": _source_identity(spec, fmt), "format": 1}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / "tokenized" / f"{spec.name}-{digest}.npz"
    tokenizer = load_tokenizer(spec.tokenizer)
    arrays = load_arrays(path)  # None when missing or damaged: built again
    if arrays is None:
        arrays = {}
        for split, (texts, labels) in glue_texts(spec).items():
            arrays.update(tokenize_split(texts, labels, tokenizer, spec.max_length, prefix=f"{split}/"))
        save_arrays(path, arrays)
    splits = {s: text_split(arrays, f"{s}/") for s in ("train", "dev")}
    return TaskData(spec.name, splits, Shape(num_labels=2, vocab_size=len(tokenizer)), ("dev",))


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class TaskInfo:
    """A task: its modality, metrics (the first is the headline score) and loader; tasks whose
    models do not map an example to class logits bring their own evaluation and teacher outputs."""

    modality: str
    metrics: tuple
    load: Callable[[Any, Path], TaskData]
    evaluate: Callable[[TaskData, Any, Any], dict] | None = None  # (data, model, device) -> scores
    teacher_outputs: Callable[[Any, TaskData, Any, Any], dict] | None = None  # (model, data, device, spec)
    check: Callable[[Any], None] | None = None  # (task spec) -> raises UserError on bad local data


# Metrics where lower is better: the worst case of a combination is then its maximum.
LOWER_IS_BETTER = frozenset({"perplexity"})


def _lm_load(spec: Any, cache_dir: Path) -> TaskData:
    from bench.lm import load_lm

    return load_lm(spec, cache_dir)


def _lm_evaluate(data: TaskData, model: Any, device: Any) -> dict:
    from bench.lm import evaluate_lm

    return evaluate_lm(data, model, device)


def _lm_teacher_outputs(model: Any, data: TaskData, device: Any, spec: Any) -> dict:
    from bench.lm import teacher_topk

    return teacher_topk(model, data, device, spec.teacher_topk)


def load_cifar10(spec: Any, cache_dir: Path) -> TaskData:
    """CIFAR-10 from a local folder or the hub, with its training views (bench/cifar.py)."""
    from bench.cifar import load_cifar10 as load

    return load(spec, cache_dir)


TASKS: dict[str, TaskInfo] = {
    "digits": TaskInfo("image", ("accuracy",), load_digits),
    "cifar10": TaskInfo("image", ("accuracy",), load_cifar10),
    "cola": TaskInfo("text", ("mcc", "accuracy"), load_glue, check=check_glue),
    "mrpc": TaskInfo("text", ("accuracy", "f1"), load_glue, check=check_glue),
    "sst2": TaskInfo("text", ("accuracy",), load_glue, check=check_glue),
    "lm": TaskInfo("lm", ("perplexity", "token_accuracy", "accuracy"), _lm_load, _lm_evaluate, _lm_teacher_outputs),
}


def check_models(task: Any, teacher: Any, student: Any, file: str) -> None:
    """Both models must take the task's inputs; text tasks need a tokenizer."""
    info = TASKS[task.name]
    for role, spec in (("teacher", teacher), ("student", student)):
        if MODELS[spec.model].modality != info.modality:
            names = [n for n, m in MODELS.items() if m.modality == info.modality]
            raise SpecError(file, f"{role}.model", f"task '{task.name}' takes {info.modality} models "
                            f"({', '.join(names)}), got '{spec.model}'")
    if info.modality == "text" and task.tokenizer is None:
        raise SpecError(file, "task.tokenizer", "expected a tokenizer name (or a pretrained teacher to take it from)")


def score(task_name: str, labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """All metrics of the task for one split."""
    return {m: METRICS[m](labels, preds) for m in TASKS[task_name].metrics}
