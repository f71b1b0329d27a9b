"""Data caches under the cache dir carry their digest (bench/core/cache.py): a truncated cache is built
again instead of failing every job, an altered but readable one instead of giving a silently wrong
score. Digits (through `bench run`), GLUE tokenization, CIFAR-10 arrays and the LM's BPE tokenizer."""

from __future__ import annotations

import types

import numpy as np
import pytest
from helpers import GLUE as GLUE_DIR
from helpers import bench_cli, digits_spec, records

from bench.core.cache import DIGEST, cache_problem, load_arrays, save_arrays
from bench.core.config import TaskSpec

pytestmark = pytest.mark.timeout(900)


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def alter(path, name: str, change) -> None:
    """Rewrite the cache as a valid .npz whose array ``name`` is changed but whose digest is the old one
    (what a buggy writer, a bad disk block that still unzips, or a hand edit leaves)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[name] = change(arrays[name])
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_a_cache_reads_back_only_when_its_digest_matches(tmp_path, capsys, caplog):
    path = tmp_path / "c.npz"
    arrays = {"a": np.arange(10, dtype=np.int32), "b": np.ones((2, 3), dtype=np.float32)}
    save_arrays(path, arrays)
    back = load_arrays(path)
    assert set(back) == {"a", "b"} and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert load_arrays(tmp_path / "missing.npz") is None and not capsys.readouterr().err
    alter(path, "a", lambda a: a + 1)
    assert cache_problem(path)[1] == "altered (its contents do not match its sha256)"
    assert load_arrays(path) is None and "damaged cache, altered" in caplog.text  # logged: bench.core.cache
    save_arrays(path, arrays)
    truncate(path)
    assert cache_problem(path)[1].startswith("unreadable")
    np.savez(path, **arrays)  # a cache written before digests: built again once
    assert cache_problem(path)[1] == "no digest (written by an older version)"
    assert DIGEST not in (load_arrays(path) or {})


def test_a_damaged_digits_cache_is_rebuilt_and_scores_do_not_change(project):
    spec = digits_spec(project, n=2, r=1)
    results = project / "results" / "tiny"
    assert bench_cli("run", str(spec), "--no-report", cwd=project).returncode == 0
    scores = {k: r["scores"] for k, r in records(results).items()}
    (cache,) = (project / ".cache" / "bench" / "digits").glob("digits-*.npz")
    for damage in (lambda: alter(cache, "dev/y", lambda y: (y + 1) % 10), lambda: truncate(cache)):
        for p in (results / "records").glob("*.json"):
            p.unlink()
        damage()
        proc = bench_cli("run", str(spec), "--no-report", cwd=project)
        assert proc.returncode == 0, proc.stderr
        assert {k: r["scores"] for k, r in records(results).items()} == scores
        assert cache_problem(cache)[1] is None  # rebuilt


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="../shared/data/glue not present")
def test_a_damaged_glue_tokenization_cache_is_rebuilt(tmp_path):
    from bench.tasks.glue import load_glue

    spec = TaskSpec(
        "mrpc", data=str(GLUE_DIR), tokenizer="all-minilm-l6-v2", max_length=40, train_subset=64, eval_subset=32
    )
    first = load_glue(spec, tmp_path).splits["train"]
    (cache,) = (tmp_path / "tokenized").glob("mrpc-*.npz")
    for damage in (lambda: alter(cache, "train/ids", lambda a: a + 1), lambda: truncate(cache)):
        damage()
        again = load_glue(spec, tmp_path).splits["train"]
        assert np.array_equal(again.ids, first.ids) and np.array_equal(again.labels, first.labels)
        assert cache_problem(cache)[1] is None


def test_a_damaged_cifar_cache_is_decoded_again(tmp_path):
    from test_cifar import _write_tarball

    from bench.tasks.cifar import cifar_arrays

    _write_tarball(tmp_path / "data")
    first = cifar_arrays(str(tmp_path / "data"), tmp_path / "cache")
    (cache,) = (tmp_path / "cache" / "cifar10").glob("*.npz")
    for damage in (lambda: alter(cache, "test/x", lambda x: 255 - x), lambda: truncate(cache)):
        damage()
        again = cifar_arrays(str(tmp_path / "data"), tmp_path / "cache")
        assert set(again) == set(first) and all(np.array_equal(again[k], first[k]) for k in first)


def test_a_damaged_lm_tokenizer_cache_is_trained_again(tmp_path):
    from bench.tasks.lm import load_lm_tokenizer

    spec = types.SimpleNamespace(tokenizer=None, vocab_size=300)
    text = "\n".join(f"the cat number {i} sat on the mat and ate {i % 7} fish" for i in range(200))
    first = load_lm_tokenizer(spec, text, tmp_path).to_str()
    (cache,) = (tmp_path / "lm").glob("bpe-*.npz")
    for damage in (lambda: alter(cache, "json", lambda a: a[:-10]), lambda: truncate(cache)):
        damage()
        assert load_lm_tokenizer(spec, text, tmp_path).to_str() == first
        assert cache_problem(cache)[1] is None
