"""CIFAR-10: decoded once into a uint8 cache, split, and given its finite set of training views.

Sources: a local folder holding ``cifar10-jpg.tar.gz`` (the layout of ``../shared/data/cifar10``:
``cifar10-jpg/{train,test}/<class>/NNNN.jpg``) or that tree already unpacked; or, when
``task.data`` is omitted, the Hugging Face hub (``uoft-cs/cifar10``, online machines only).
The images are decoded once into ``<cache>/cifar10/<digest>.npz`` (never into the repository).

Splits: ``train`` (50,000) and ``test`` (10,000, the reported split; the paper reports test
accuracy and no checkpoint is selected on it). With ``task.views = V > 0`` every training image
gets V of the 162 crop/flip views of standard CIFAR augmentation (``tasks.crop_flip``), drawn
once with ``split_seed``; teachers and students train on those views and the teachers' logits
are cached per (example, view), so a KD target is always the teachers' output on the very view
the student sees. ``views = 162`` is the whole standard augmentation, exactly.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.cache import load_arrays, save_arrays
from bench.core.errors import UserError
from bench.core.hashing import stable_hash
from bench.models.builders import Shape
from bench.tasks.base import ALL_VIEWS, Split, TaskData, _subset, hub_datasets

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
TARBALL = "cifar10-jpg.tar.gz"


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _add(out: dict, member: str, blob: bytes, where: str) -> None:
    parts = member.split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith((".jpg", ".jpeg", ".png")):
        return
    split, label = parts[-3], parts[-2]
    if split not in ("train", "test"):
        return
    if label not in CLASSES:
        raise UserError(
            f"{where}: unknown CIFAR-10 class folder '{label}' ({member}); expected one of: {', '.join(CLASSES)}"
        )
    out[split].append((member, CLASSES.index(label), blob))


def _read_local(root: Path) -> dict[str, list]:
    """(name, label, encoded image) of every image under ``root`` (tarball or unpacked tree)."""
    out: dict[str, list] = {"train": [], "test": []}
    tarball = root / TARBALL
    if tarball.is_file():
        with tarfile.open(tarball) as tar:
            for m in tar:
                if m.isfile():
                    member = tar.extractfile(m)
                    assert member is not None  # a regular file's member can always be extracted
                    _add(out, m.name, member.read(), str(tarball))
    else:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                _add(out, f.relative_to(root).as_posix(), f.read_bytes(), str(root))
    for split, items in out.items():
        if not items:
            raise UserError(
                f"{root}: no CIFAR-10 {split} images found; expected {TARBALL} or folders "
                f"<data>/[cifar10-jpg/]{split}/<class>/*.jpg"
            )
    return out


def _arrays_from_local(root: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for split, items in _read_local(root).items():
        items.sort(key=lambda t: t[0])  # a fixed order, whatever the archive's
        arrays[f"{split}/x"] = np.stack([_decode(blob) for _, _, blob in items])
        arrays[f"{split}/y"] = np.asarray([label for _, label, _ in items], dtype=np.int64)
    return arrays


def _arrays_from_hub() -> dict[str, np.ndarray]:
    datasets = hub_datasets()  # online only: nothing is downloaded on offline machines

    arrays = {}
    for split in ("train", "test"):
        ds = datasets.load_dataset("uoft-cs/cifar10", split=split, trust_remote_code=False)
        arrays[f"{split}/x"] = np.stack(
            [np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1) for im in ds["img"]]
        )
        arrays[f"{split}/y"] = np.asarray(ds["label"], dtype=np.int64)
    return arrays


def _identity(data: str | None) -> dict:
    if data is None:
        return {"hub": "uoft-cs/cifar10"}
    root = Path(data)
    tarball = root / TARBALL
    if tarball.is_file():
        st = tarball.stat()
        return {"tarball": [st.st_size, int(st.st_mtime)]}
    return {"folder": str(root.resolve())}


def cifar_arrays(data: str | None, cache_dir: Path) -> dict[str, np.ndarray]:
    """Decoded images (uint8, N x 3 x 32 x 32) and labels of train and test, cached on disk."""

    path = cache_dir / "cifar10" / f"{stable_hash(_identity(data))}.npz"
    arrays = load_arrays(path)  # None when missing or damaged: decoded again
    if arrays is not None:
        return arrays
    arrays = _arrays_from_hub() if data is None else _arrays_from_local(Path(data))
    save_arrays(path, arrays)
    return arrays


def view_table(n: int, views: int, seed: int) -> np.ndarray | None:
    """Per example, the codes of its ``views`` training views: all 162 in order when views = 162,
    else a fixed random choice without repetition (None when views = 0)."""

    if views == 0:
        return None
    if views == ALL_VIEWS:
        return np.tile(np.arange(ALL_VIEWS, dtype=np.int16), (n, 1))
    rng = np.random.default_rng([seed, 10])
    return np.argsort(rng.random((n, ALL_VIEWS)), axis=1)[:, :views].astype(np.int16)


def load_cifar10(spec: Any, cache_dir: Path) -> Any:
    """CIFAR-10 as a TaskData: uint8 images normalised per batch, training views per ``spec.views``."""

    arrays = cifar_arrays(spec.data, cache_dir)
    splits = {}
    for split, size in (("train", spec.train_subset), ("test", spec.eval_subset)):
        keep = _subset(len(arrays[f"{split}/y"]), size, spec.split_seed)
        x, y = arrays[f"{split}/x"][keep], arrays[f"{split}/y"][keep]
        views = view_table(len(y), spec.views, spec.split_seed) if split == "train" else None
        splits[split] = Split(labels=y, x=x, norm=(MEAN, STD), views=views)
    return TaskData("cifar10", splits, Shape(num_labels=10, input_shape=(3, 32, 32)), ("test",))
