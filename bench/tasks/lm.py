"""The language-model task (Gholami & Omar 2023): a text corpus cut into blocks for causal LMs,
a tokenizer trained locally, LAMBADA last-word scoring, held-out perplexity, and the teachers'
top-K next-token logits that token-level KD distils from.

- Corpus: ``task.data`` = a local text file (cut at 90% of its lines: the first part trains, the
  rest is the fixed validation split), or ``hub:NAME[:CONFIG]`` for a Hugging Face dataset with a
  ``text`` column (online machines; its train and validation splits).
- Tokenizer: ``task.tokenizer = "bpe"`` (default) trains a byte-level BPE of ``task.vocab_size``
  tokens on the training part with the ``tokenizers`` library, cached; anything else is a
  pretrained tokenizer (alias, folder or hub name) for pretrained models.
- Blocks: non-overlapping windows of ``max_length + 1`` tokens; the model reads the first
  ``max_length`` and predicts the last ``max_length``. No padding in training.
- LAMBADA (``task.lambada`` = the OpenAI jsonl): context = text up to the last space, target =
  " " + the last word (as lm-evaluation-harness splits it). Accuracy: every target token is the
  greedy (argmax) prediction given the true preceding tokens, so a multi-token word must be right
  in all its pieces; perplexity: exp of the mean over examples of the target word's total NLL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.cache import load_arrays, save_arrays
from bench.core.errors import UserError
from bench.core.hashing import stable_hash
from bench.models.builders import Shape
from bench.tasks.base import Split, TaskData, _subset, hub_datasets
from bench.tasks.glue import load_tokenizer

EOS = "<|endoftext|>"


# --------------------------------------------------------------------------- corpus + tokenizer


def read_corpus(spec: Any) -> tuple[str, str]:
    """(training text, validation text) of the task."""
    if spec.data.startswith("hub:"):
        datasets = hub_datasets()  # online only: nothing is downloaded on offline machines

        name, _, config = spec.data[4:].partition(":")
        ds = datasets.load_dataset(name, config or None, trust_remote_code=False)
        return "\n".join(ds["train"]["text"]), "\n".join(ds["validation"]["text"])
    path = Path(spec.data)
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the corpus as UTF-8 text ({e})") from None
    cut = int(len(lines) * 0.9)
    if cut == 0 or cut == len(lines):
        raise UserError(f"{path}: expected a text corpus of at least 2 lines, got {len(lines)}")
    return "".join(lines[:cut]), "".join(lines[cut:])


def load_lm_tokenizer(spec: Any, train_text: str, cache_dir: Path) -> Any:
    """A ``tokenizers.Tokenizer``: BPE trained on the training text (cached), or a pretrained one."""
    from tokenizers import Tokenizer

    if spec.tokenizer not in (None, "bpe"):
        return load_tokenizer(spec.tokenizer).backend_tokenizer

    # a checked cache (bench/core/cache.py): the tokenizer's JSON as bytes, with its digest
    path = cache_dir / "lm" / f"bpe-{stable_hash([spec.vocab_size, len(train_text), train_text[:4096]])}.npz"
    stored = load_arrays(path)
    if stored is not None:
        return Tokenizer.from_str(stored["json"].tobytes().decode("utf-8"))
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        train_text.splitlines(), vocab_size=spec.vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False
    )
    save_arrays(path, {"json": np.frombuffer(bpe._tokenizer.to_str().encode("utf-8"), dtype=np.uint8)})
    return bpe._tokenizer


def token_bytes(tokenizer: Any) -> np.ndarray:
    """How many UTF-8 bytes of text each token id stands for (0 for special tokens such as EOS),
    for bits per byte: exact for byte-level BPE (each character of a token is one byte), else the
    length of the token decoded alone."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    out = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    byte_level = type(tokenizer.pre_tokenizer).__name__ == "ByteLevel"
    for token, i in vocab.items():
        if i < len(out) and token not in special:
            out[i] = len(token) if byte_level else len(tokenizer.decode([i]).encode("utf-8"))
    return out


def encode(tokenizer: Any, text: str) -> np.ndarray:
    return np.asarray(tokenizer.encode(text).ids, dtype=np.int32)


def blocks(ids: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows of ``length + 1`` tokens (the remainder is dropped)."""
    n = (len(ids) - 1) // length
    return (
        np.stack([ids[i * length : i * length + length + 1] for i in range(n)])
        if n
        else np.zeros((0, length + 1), dtype=np.int32)
    )


def read_lambada(path: str) -> list[tuple[str, str]]:
    """(context, target) pairs: target = " " + the last word, context = the text before it."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path}:{lineno}: expected a JSON object with a 'text' field") from None
            context, _, word = text.rstrip().rpartition(" ")
            if not context or not word:
                raise UserError(f"{path}:{lineno}: expected a text with a last word after a space")
            out.append((context, " " + word))
    return out


def lambada_split(pairs: list[tuple[str, str]], tokenizer: Any, max_length: int) -> Any:
    """A ragged Split of context + target ids; ``types`` marks the target tokens with 1."""

    ids, types, lengths = [], [], []
    for context, target in pairs:
        t = encode(tokenizer, target)[: max_length - 1]
        c = encode(tokenizer, context)[-(max_length - len(t)) :]  # at least one context token
        ids.append(np.concatenate([c, t]))
        types.append(np.concatenate([np.zeros(len(c), np.int8), np.ones(len(t), np.int8)]))
        lengths.append(len(c) + len(t))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Split(
        labels=np.zeros(len(pairs), dtype=np.int64),
        ids=np.concatenate(ids),
        types=np.concatenate(types),
        offsets=offsets,
    )


def load_lm(spec: Any, cache_dir: Path) -> Any:
    """The LM task: train / val blocks and the LAMBADA split (when ``task.lambada`` is set)."""

    train_text, val_text = read_corpus(spec)
    tokenizer = load_lm_tokenizer(spec, train_text, cache_dir)
    splits = {}
    for name, text, size in (("train", train_text, spec.train_subset), ("val", val_text, spec.eval_subset)):
        b = blocks(encode(tokenizer, text), spec.max_length)
        b = b[_subset(len(b), size, spec.split_seed)]
        splits[name] = Split(labels=b[:, 1:].astype(np.int64), x=b)
    per_token = token_bytes(tokenizer)
    eval_splits: tuple[str, ...] = ("val",)
    if spec.lambada:
        pairs = read_lambada(spec.lambada)
        pairs = [pairs[i] for i in _subset(len(pairs), spec.eval_subset, spec.split_seed)]
        splits["lambada"] = lambada_split(pairs, tokenizer, spec.max_length)
        eval_splits = ("val", "lambada")
    vocab = tokenizer.get_vocab_size()
    shape = Shape(num_labels=vocab, vocab_size=vocab, context=spec.max_length)
    return TaskData(
        "lm",
        splits,
        shape,
        eval_splits,
        tokenizer=tokenizer,
        text_bytes={"val": int(per_token[splits["val"].labels].sum())},
    )


# --------------------------------------------------------------------------- evaluation


LM_EVAL_NAMES = {"lambada": ("lambada_openai", {"accuracy": "acc", "perplexity": "perplexity"})}


def lm_eval_scores(scores: dict) -> dict:
    """The scores under lm-evaluation-harness's task and metric names, for comparison with its
    tables: LAMBADA as ``lambada_openai`` with ``acc`` and ``perplexity`` (same definitions: the
    whole last word greedy, exp of the mean target NLL)."""
    return {
        task: {theirs: scores[split][ours] for ours, theirs in names.items() if ours in scores[split]}
        for split, (task, names) in LM_EVAL_NAMES.items()
        if split in scores
    }


def continuation_scores(log_probs: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, float]:
    """LAMBADA metrics from, per example, the log-probabilities (n_target x vocab) at the positions
    that predict its target tokens, and those tokens: accuracy (every token greedy) and
    perplexity (exp of the mean over examples of the target's total NLL)."""
    greedy, nll = [], []
    for lp, t in zip(log_probs, targets):
        greedy.append(bool((lp.argmax(axis=1) == t).all()))
        nll.append(-float(lp[np.arange(len(t)), t].sum()))
    return {"accuracy": float(np.mean(greedy)), "perplexity": math.exp(float(np.mean(nll)))}


def _lm_logits(model: Any, ids: Any, mask: Any) -> Any:
    return model.hf(input_ids=ids, attention_mask=mask).logits


def evaluate_lm(data: Any, model: Any, device: Any, batch_size: int = 32) -> dict:
    """Held-out perplexity, bits per byte and next-token accuracy on ``val``; LAMBADA accuracy and
    perplexity (lm-eval: ``lambada_openai``, ``acc`` and ``perplexity``; ``LM_EVAL_NAMES``)."""
    import torch

    model.to(device).eval()
    scores = {}
    val = data.splits["val"]
    nll, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for b in range(0, len(val), batch_size):
            idx = np.arange(b, min(b + batch_size, len(val)))
            logits = model(**{k: v.to(device) for k, v in val.batch(idx).items()}).float()
            labels = torch.from_numpy(val.labels[idx]).to(device)
            nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
            count += labels.numel()
        scores["val"] = {"perplexity": math.exp(nll / max(1, count)), "token_accuracy": correct / max(1, count)}
        if data.text_bytes.get("val"):  # comparable across tokenizers, as lm-eval reports it
            scores["val"]["bits_per_byte"] = nll / math.log(2) / data.text_bytes["val"]
        if "lambada" in data.splits:
            lam = data.splits["lambada"]
            log_probs, targets = [], []
            for b in range(0, len(lam), batch_size):
                idx = np.arange(b, min(b + batch_size, len(lam)))
                batch = lam.batch(idx)
                logits = _lm_logits(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
                lp = torch.log_softmax(logits.float(), -1).cpu().numpy()
                for row, i in enumerate(idx):
                    s, e = lam.offsets[i], lam.offsets[i + 1]
                    is_target = lam.types[s:e] == 1
                    pos = np.flatnonzero(is_target)
                    log_probs.append(lp[row, pos - 1])
                    targets.append(lam.ids[s:e][is_target].astype(np.int64))
            scores["lambada"] = continuation_scores(log_probs, targets)
    return scores


# --------------------------------------------------------------------------- teacher outputs


def tail_logit(logits: Any, top_values: Any) -> Any:
    """Per row, the logit that, given to each of the V - K tokens outside the top K, gives them
    together their true probability at T = 1: log(mean of their exp-logits); -inf when K = V."""
    import torch

    vocab, k = logits.shape[-1], top_values.shape[-1]
    if k >= vocab:
        return torch.full(logits.shape[:-1], -math.inf)
    lse_all, lse_top = torch.logsumexp(logits, -1), torch.logsumexp(top_values, -1)
    share = torch.exp(lse_top - lse_all).clamp(max=1.0 - 1e-6)  # the top K's mass at T = 1
    return lse_all + torch.log1p(-share) - math.log(vocab - k)


CACHE_FIELDS = ("topk_idx", "topk_val", "tail_logit")  # a top-K cache; a dense one holds "logits"


def teacher_topk(model: Any, data: Any, device: Any, k: int, batch_size: int = 32) -> dict[str, np.ndarray]:
    """A teacher's cache of next-token logits at every position of every training block. With
    k = 0 (or k >= V): every logit, ``logits`` (float16, (blocks, max_length, V)), exact up to
    float16. Otherwise the K largest:
    ``topk_idx`` (int32) and ``topk_val`` (float16), shape (blocks, max_length, K); and
    ``tail_logit`` (float32, (blocks, max_length)): the logit that, given to each of the V - K
    other tokens, keeps their total probability at T = 1 exact (log of their mean exp-logit;
    -inf when K = V); and ``fidelity`` (float32, one row per FIDELITY_TEMPERATURES: T, gradient
    cosine, loss ratio of this cache against the exact logits, ``cache_fidelity``, for a uniform
    student on the fidelity sample)."""
    import torch

    model.to(device).eval()
    train = data.splits["train"]
    dense = k == 0 or k >= data.shape.vocab_size
    parts: dict[str, list] = {name: [] for name in (("logits",) if dense else CACHE_FIELDS)}
    with torch.no_grad():
        for b in range(0, len(train), batch_size):
            idx = np.arange(b, min(b + batch_size, len(train)))
            logits = model(**{n: v.to(device) for n, v in train.batch(idx).items()}).float()
            if dense:
                parts["logits"].append(logits.to(torch.float16).cpu().numpy())
                continue
            top = torch.topk(logits, k, dim=-1)
            parts["topk_idx"].append(top.indices.to(torch.int32).cpu().numpy())
            parts["topk_val"].append(top.values.to(torch.float16).cpu().numpy())
            parts["tail_logit"].append(tail_logit(logits, top.values).cpu().numpy())
    out = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    sample = fidelity_sample(data)
    exact = full_logits(model, data, device, sample)
    uniform = torch.zeros_like(exact)  # a student that knows nothing yet
    rows = [(t, cache_fidelity([exact], [sample_cache(out, sample)], uniform, t)) for t in FIDELITY_TEMPERATURES]
    out["fidelity"] = np.array([[t, r["grad_cosine"], r["loss_ratio"]] for t, r in rows], np.float32)
    return out


def mean_tail(tails: list[np.ndarray]) -> np.ndarray:
    """The k-teacher logit of every token outside the union: the mean of the teachers' tail logits."""
    return np.mean(np.stack([np.asarray(t, dtype=np.float32) for t in tails]), axis=0)


def mean_dense(logits: list[np.ndarray], rows: int = 4096) -> np.ndarray:
    """The mean of k dense caches (float16, (..., V)), accumulated in float32 a chunk of rows at
    a time so that the peak memory stays one float16 copy above the inputs."""
    flat = [np.asarray(lg).reshape(-1, lg.shape[-1]) for lg in logits]
    out = np.empty(flat[0].shape, dtype=np.float16)
    for a in range(0, len(out), rows):
        out[a : a + rows] = sum(f[a : a + rows].astype(np.float32) for f in flat) / len(flat)
    return out.reshape(logits[0].shape)


def kd_target(outputs: list[dict]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """The k-teacher target from the teachers' caches: (token ids, logits, tail logits). Dense
    caches give (None, the mean logits over the whole vocabulary, None): exact. Top-K caches give
    ``union_target`` and ``mean_tail``: an approximation (docs/lm.md)."""
    if all("logits" in o for o in outputs):
        return None, mean_dense([o["logits"] for o in outputs]), None
    if any("logits" in o for o in outputs):
        raise ValueError("the k teachers' caches mix dense and top-K logits; retrain them with one task.teacher_topk")
    ids, vals = union_target([o["topk_idx"] for o in outputs], [o["topk_val"] for o in outputs])
    return ids, vals, mean_tail([o["tail_logit"] for o in outputs])


def union_target(indices: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The k-teacher KD target from top-K caches, per position: the union of the teachers'
    retained tokens, each with the MEAN of the k teachers' logits, where a teacher that did not
    retain a token contributes its K-th largest logit (an upper bound on the true value). Rows of
    shape (..., k*K): token ids (int32) and mean logits, with -inf on repeated ids (zero probability).
    With k = 1 (or K = vocabulary) this is the teacher's own top K. The tokens outside the union
    get the mean of the teachers' tail logits (``mean_tail``), see ``token_kd_loss``."""
    shape = indices[0].shape[:-1]
    idx = [np.asarray(i).reshape(-1, i.shape[-1]) for i in indices]
    val = [np.asarray(v, dtype=np.float32).reshape(-1, v.shape[-1]) for v in values]
    if len(idx) == 1:
        return idx[0].astype(np.int32).reshape(*shape, -1), val[0].reshape(*shape, -1)
    union = np.concatenate(idx, axis=1).astype(np.int32)
    mean = np.empty(union.shape, dtype=np.float32)
    width = int(max(i.max() for i in idx)) + 1
    step = max(1, (1 << 24) // width)  # rows per chunk: a dense (rows, vocabulary) scratch of 64 MB
    for a in range(0, len(union), step):
        b = min(a + step, len(union))
        rows = np.arange(b - a)[:, None]
        floors = [v[a:b].min(axis=1, keepdims=True) for v in val]
        total = np.repeat(sum(floors), width, axis=1)  # every teacher at its floor ...
        seen = np.zeros((b - a, width), dtype=bool)
        repeated = []
        for i, v, floor in zip(idx, val, floors):
            total[rows, i[a:b]] += v[a:b] - floor  # ... but where it kept the token (ids distinct per teacher)
            repeated.append(seen[rows, i[a:b]])  # kept by an earlier teacher too
            seen[rows, i[a:b]] = True
        chunk = total[rows, union[a:b]] / len(idx)
        chunk[np.concatenate(repeated, axis=1)] = -np.inf
        mean[a:b] = chunk
    return union.reshape(*shape, -1), mean.reshape(*shape, -1)


# --------------------------------------------------------------------------- cache fidelity

FIDELITY_POSITIONS = 1024  # training positions (the first ones) on which a cache's fidelity is measured
FIDELITY_TEMPERATURES = (1.0, 2.0, 4.0)  # measured for each teacher's own cache when it is written


def cache_fidelity(exact: list[Any], outputs: list[dict], student_logits: Any, temperature: float) -> dict:
    """How well the cached k-teacher target stands in for the exact one, on some positions.

    ``exact``: each teacher's full next-token logits (positions, V); ``outputs``: the same
    teachers' cache entries at those positions (dense ``logits``, or ``topk_idx``, ``topk_val``,
    ``tail_logit``);
    ``student_logits`` (positions, V): the student the KD term is evaluated for. Returns the
    cosine between the gradients (w.r.t. the student logits) of the cached and of the exact KD
    term ``T^2 KL``, and the ratio cached / exact of that term, over all the positions."""
    import torch

    from bench.models.losses import token_kd_loss  # lazy: torch only where a cache's fidelity is measured (workers)

    ids, vals, tail = kd_target(outputs)
    s = student_logits.detach().float().reshape(-1, student_logits.shape[-1])
    n, vocab = s.shape
    mean = torch.stack([e.float().reshape(n, vocab) for e in exact]).mean(0)
    labels, ones = torch.zeros(n, dtype=torch.long), torch.ones(n)
    every = torch.arange(vocab).expand(n, vocab)

    def term(target_ids: Any, target_logits: Any, tail_logits: Any) -> tuple[float, Any]:
        x = s.clone().requires_grad_(True)
        loss = token_kd_loss(x, target_ids, target_logits, labels, ones, temperature, 0.0, tail_logits=tail_logits)
        loss.backward()
        return float(loss.detach()), x.grad.reshape(-1).double()

    cached, g_cached = term(
        every if ids is None else torch.from_numpy(ids).reshape(n, -1).long(),
        torch.from_numpy(vals).float().reshape(n, -1),
        None if tail is None else torch.from_numpy(tail).reshape(-1),
    )
    full, g_full = term(every, mean, None)
    cosine = float(g_cached @ g_full / (g_cached.norm() * g_full.norm()).clamp_min(1e-300))
    return {"grad_cosine": cosine, "loss_ratio": cached / full if full > 0 else 1.0}


def fidelity_sample(data: Any) -> np.ndarray:
    """The training blocks that hold the first FIDELITY_POSITIONS positions (cache fidelity)."""
    return np.arange(min(-(-FIDELITY_POSITIONS // data.shape.context), len(data.splits["train"])))


def sample_cache(output: dict, idx: np.ndarray) -> dict:
    """A teacher cache's entries at the fidelity sample's positions, flattened to (positions, ...)."""
    return {
        name: output[name][idx].reshape(-1, *output[name].shape[2:])[:FIDELITY_POSITIONS]
        for name in ("logits", *CACHE_FIELDS)
        if name in output
    }


def cache_kind(output: dict) -> str:
    """How a teacher cache stores the logits, as records say it."""
    return "all logits (float16)" if "logits" in output else f"top-{output['topk_val'].shape[-1]} + tail bucket"


def full_logits(model: Any, data: Any, device: Any, idx: np.ndarray) -> Any:
    """A model's next-token logits (positions, V) at the fidelity sample's positions of training
    blocks ``idx``, float32 on the CPU."""
    import torch

    model.to(device).eval()
    with torch.no_grad():
        batch = {n: v.to(device) for n, v in data.splits["train"].batch(idx).items()}
        return model(**batch).float().flatten(0, 1)[:FIDELITY_POSITIONS].cpu()


# --------------------------------------------------------------------------- the method
