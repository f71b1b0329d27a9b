"""scikit-learn's embedded 8x8 digits: the offline task of the quickstart and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.core.cache import load_arrays, save_arrays
from bench.core.hashing import stable_hash
from bench.models.builders import Shape
from bench.tasks.base import Split, TaskData, _subset


def load_digits(spec: Any, cache_dir: Path) -> TaskData:
    """scikit-learn's 8x8 digits, scaled to [0, 1], split 60/20/20 stratified by ``split_seed``.
    The split arrays are cached in ``cache_dir`` (importing scikit-learn costs a new worker
    process about 0.7 s, far more than its first job's training; benchmarks/queue_efficiency.py)."""
    ident = {
        "split_seed": spec.split_seed,
        "train_subset": spec.train_subset,
        "eval_subset": spec.eval_subset,
        "format": 1,
    }
    digest = stable_hash(ident)
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
