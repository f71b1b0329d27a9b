"""Tasks: the digits split, GLUE reading from the shared folder, tokenization cache, padding."""

import numpy as np
import pytest
from helpers import GLUE as GLUE_DIR

from bench.core.config import TaskSpec
from bench.tasks.digits import load_digits
from bench.tasks.glue import GLUE, _read_glue_tsv, load_glue
from bench.tasks.table import score

needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="../shared/data/glue not present")


def test_digits_split_is_fixed_and_stratified(tmp_path):
    a = load_digits(TaskSpec("digits"), tmp_path)
    b = load_digits(TaskSpec("digits"), tmp_path)
    sizes = {k: len(v) for k, v in a.splits.items()}
    assert sizes == {"train": 1078, "dev": 359, "test": 360}
    assert np.array_equal(a.splits["dev"].labels, b.splits["dev"].labels)
    counts = np.bincount(a.splits["train"].labels)
    assert counts.min() >= 104 and counts.max() <= 110  # stratified: ~10% per class
    assert a.splits["train"].batch(np.array([0, 5]))["x"].shape == (2, 1, 8, 8)
    sub = load_digits(TaskSpec("digits", train_subset=100), tmp_path)
    assert len(sub.splits["train"]) == 100


def test_metrics_belong_to_the_task():
    y = np.array([0, 1, 1, 0])
    p = np.array([0, 1, 0, 0])
    assert score("mrpc", y, p) == pytest.approx({"accuracy": 0.75, "f1": 2 / 3})
    assert score("cola", y, p)["mcc"] == pytest.approx(1 / np.sqrt(3))
    assert set(score("digits", y, p)) == {"accuracy"}


@needs_glue
@pytest.mark.parametrize("task,train,dev", [("cola", 8551, 1043), ("mrpc", 3668, 408), ("sst2", 67349, 872)])
def test_glue_files_read_completely(task, train, dev):
    fmt = GLUE[task]
    texts, labels = _read_glue_tsv(GLUE_DIR / fmt.folder / "train.tsv", fmt)
    assert len(texts) == len(labels) == train and set(np.unique(labels)) == {0, 1}
    assert len(_read_glue_tsv(GLUE_DIR / fmt.folder / "dev.tsv", fmt)[1]) == dev
    assert all(len(t) == len(fmt.text_cols) for t in texts[:10])


@needs_glue
def test_glue_tokenization_is_cached_and_padded_per_batch(tmp_path):
    spec = TaskSpec(
        "mrpc", data=str(GLUE_DIR), tokenizer="all-minilm-l6-v2", max_length=40, train_subset=64, eval_subset=32
    )
    data = load_glue(spec, tmp_path)
    cached = list((tmp_path / "tokenized").glob("mrpc-*.npz"))
    assert len(cached) == 1
    again = load_glue(spec, tmp_path)
    assert np.array_equal(again.splits["train"].ids, data.splits["train"].ids)
    split = data.splits["train"]
    assert len(split) == 64 and len(data.splits["dev"]) == 32
    lengths = np.diff(split.offsets)
    assert lengths.max() <= 40
    idx = np.array([int(lengths.argmin()), int(lengths.argmax())])
    batch = split.batch(idx)
    assert batch["input_ids"].shape == (2, lengths.max())  # padded to the longest in the batch
    assert batch["attention_mask"][0].sum().item() == lengths.min()
    assert batch["token_type_ids"][1].max().item() == 1  # sentence pairs: the second has type 1
    assert data.shape.vocab_size == 30522


@needs_glue
def test_missing_glue_file_names_the_path(tmp_path):
    from bench.core.errors import UserError

    (tmp_path / "CoLA").mkdir()
    with pytest.raises(UserError, match=r"CoLA/train.tsv: GLUE file not found"):
        load_glue(TaskSpec("cola", data=str(tmp_path), tokenizer="all-minilm-l6-v2"), tmp_path / "cache")
