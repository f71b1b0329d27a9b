"""GLUE CoLA, MRPC and SST-2: from a folder in the GLUE TSV layout or the hub, tokenized once and cached."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.cache import load_arrays, save_arrays
from bench.core.errors import UserError
from bench.core.hashing import stable_hash
from bench.core.keys import identity
from bench.models.builders import Shape, resolve_pretrained
from bench.tasks.base import Split, TaskData, _subset, hub_datasets


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
        raise UserError(
            f"{path}: GLUE file not found; expected the GLUE TSV layout (<data>/{fmt.folder}/train.tsv and dev.tsv)"
        )
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
                raise UserError(
                    f"{path}:{lineno}: expected a label in column {fmt.label_col + 1} "
                    f"and text in columns {[c + 1 for c in fmt.text_cols]}, got {row!r}"
                ) from None
    if not texts:
        raise UserError(
            f"{path}: expected at least one example (label in column {fmt.label_col + 1}, text in "
            f"columns {[c + 1 for c in fmt.text_cols]}), the file has none"
        )
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
    datasets = hub_datasets()  # online only: nothing is downloaded on offline machines

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
    enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length, return_token_type_ids=True)
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
    return Split(
        labels=arrays[f"{prefix}labels"],
        ids=arrays[f"{prefix}ids"],
        types=arrays[f"{prefix}types"],
        offsets=arrays[f"{prefix}offsets"],
    )


def tokenize_split(
    texts: list[tuple[str, ...]], labels: np.ndarray, tokenizer: Any, max_length: int, prefix: str = ""
) -> dict[str, np.ndarray]:
    """Tokenized arrays of one split, ready for ``save_arrays`` / ``text_split``."""
    arrays = {f"{prefix}{k}": v for k, v in _tokenize(texts, tokenizer, max_length).items()}
    arrays[f"{prefix}labels"] = np.asarray(labels, dtype=np.int64)
    return arrays


def concat_splits(a: Split, b: Split) -> Split:
    """Examples of ``a`` followed by those of ``b`` (text splits)."""
    assert a.offsets is not None and b.offsets is not None  # text splits have offsets
    return Split(
        labels=np.concatenate([a.labels, b.labels]),
        ids=np.concatenate([a.ids, b.ids]),
        types=np.concatenate([a.types, b.types]),
        offsets=np.concatenate([a.offsets, b.offsets[1:] + a.offsets[-1]]),
    )


def load_glue(spec: Any, cache_dir: Path) -> TaskData:
    """A GLUE task, tokenized (cached on disk) with the spec's tokenizer."""
    fmt = GLUE[spec.name]
    ident = {"task": identity(spec), "source": _source_identity(spec, fmt), "format": 1}
    digest = stable_hash(ident)
    path = cache_dir / "tokenized" / f"{spec.name}-{digest}.npz"
    tokenizer = load_tokenizer(spec.tokenizer)
    arrays = load_arrays(path)  # None when missing or damaged: built again
    if arrays is None:
        arrays = {}
        for split, (texts, labels) in glue_texts(spec).items():
            arrays.update(tokenize_split(texts, labels, tokenizer, spec.max_length, prefix=f"{split}/"))
        save_arrays(path, arrays)
    splits = {s: text_split(arrays, f"{s}/") for s in ("train", "dev")}
    return TaskData(spec.name, splits, Shape(num_labels=2, vocab_size=len(tokenizer)), ("dev",), tokenizer)
