"""Pure loss functions. One convention, pinned and recorded with every result
(``bench.methods.KD_CONVENTION``):

    L = alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

KL summed over classes, everything averaged over the batch; ``t`` is the mean of the k
teachers' logits (Ilichev et al. 2021, eq. 9 with the intended roles).

Every loss computes in float32 whatever precision the forward pass ran at (``run.precision``:
bf16/fp16 logits and features are cast to float32 first, ``_wide``), so the convention does not
depend on it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _wide(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors with 16-bit floats (an autocast forward pass) cast to float32; others as they are."""
    return tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last dimension written as ``x - logsumexp(x)``: equal to
    ``F.log_softmax`` up to float rounding (measured: 5e-7 at most) and, for the few classes of a
    classifier, about 4x faster on CPU over many rows (torch 2.13's kernel: 0.47 ms for 3,008 rows
    of 10 classes, this 0.11 ms), which is what a stack of students (``run.stack``) feeds it."""
    return x - x.logsumexp(dim=-1, keepdim=True)


def mean_teacher_logits(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Average k teachers' logits of shape (k, batch, classes) into the KD target logits."""
    if teacher_logits.dim() != 3:
        raise ValueError(f"expected (k, batch, classes), got shape {tuple(teacher_logits.shape)}")
    return teacher_logits.mean(dim=0)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """The pinned KD loss for one batch; ``teacher_logits`` is already the k-teacher mean."""
    student_logits, teacher_logits = _wide(student_logits, teacher_logits)
    ce = F.nll_loss(log_softmax(student_logits), labels)  # F.cross_entropy up to rounding (log_softmax)
    if alpha >= 1.0:
        return ce
    log_p_s = log_softmax(student_logits / temperature)
    log_p_t = log_softmax(teacher_logits / temperature)
    # F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True), written out: the same
    # values and gradients bit for bit, and torch.func.vmap batches it (kl_div has no batching rule)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum() / student_logits.shape[0]
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


def token_kd_loss(
    student_logits: torch.Tensor,
    target_ids: torch.Tensor,
    target_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    alpha: float,
    tail_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """The pinned KD loss per token of a causal LM, averaged over real (mask = 1) tokens.

    ``student_logits`` (tokens, vocab). The teacher logits at each token are ``target_logits``
    on the token ids ``target_ids`` (tokens, U) (-inf: no entry) and, with ``tail_logits``
    (tokens,), that logit on every other token of the vocabulary: the KL then runs over the U
    tokens plus one bucket holding all the others (teacher: n_other * exp(tail / T); student: its
    own mass there). Without ``tail_logits`` the teacher distribution is renormalised on the U
    tokens. ``alpha*CE + (1-alpha)*T^2*KL``; with the whole vocabulary as support this is
    ``kd_loss`` per token.
    """
    student_logits, target_logits = _wide(student_logits, target_logits)
    tail_logits = None if tail_logits is None else _wide(tail_logits)[0]
    m = mask.to(student_logits.dtype)
    n = m.sum().clamp_min(1.0)
    ce = (F.cross_entropy(student_logits, labels, reduction="none") * m).sum() / n
    if alpha >= 1.0:
        return ce
    full = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_s = full.gather(1, target_ids)
    scaled = target_logits / temperature
    if tail_logits is not None:
        n_other = student_logits.shape[-1] - torch.isfinite(target_logits).sum(-1)
        bucket = torch.where(
            n_other > 0,
            torch.log(n_other.clamp_min(1).to(full.dtype)) + tail_logits / temperature,
            torch.full_like(tail_logits, -math.inf),
        )
        scaled = torch.cat([scaled, bucket[:, None]], dim=-1)
        # the student's mass off the support; the -1e30 column keeps an empty complement finite (no NaN grads)
        rest = torch.cat([full.scatter(1, target_ids, -math.inf), full.new_full((len(full), 1), -1e30)], dim=-1)
        log_p_s = torch.cat([log_p_s, torch.logsumexp(rest, -1, keepdim=True)], dim=-1)
    log_p_t = F.log_softmax(scaled, dim=-1)
    p_t = log_p_t.exp()
    kl = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t)).sum(-1)
    return alpha * ce + (1.0 - alpha) * temperature**2 * (kl * m).sum() / n


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """TinyBERT's prediction-layer loss as its task_distill.py computes it: -p_t log p_s at
    temperature T (no T^2), averaged over the batch AND the classes, i.e. the per-example soft
    cross-entropy divided by the number of classes. The scale matters: gradients are clipped."""
    student_logits, teacher_logits = _wide(student_logits, teacher_logits)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    return -(p_t * F.log_softmax(student_logits / temperature, dim=-1)).mean()


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` (broadcastable to a's shape) is 1;
    padded positions count for nothing."""
    a, b = _wide(a, b)
    mask = mask.to(a.dtype).expand_as(a)
    return ((a - b) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


def attention_mse(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """TinyBERT's attention loss for one layer pair: MSE of the (pre-softmax) attention scores,
    averaged over heads and over the (query, key) pairs where both tokens are real (padding
    excluded). Scores are (batch, heads, len, len); with different head counts the head-averaged
    score maps are compared instead."""
    student_scores, teacher_scores = _wide(student_scores, teacher_scores)
    if student_scores.shape[1] != teacher_scores.shape[1]:
        student_scores = student_scores.mean(dim=1, keepdim=True)
        teacher_scores = teacher_scores.mean(dim=1, keepdim=True)
    m = attention_mask.to(student_scores.dtype)
    pairs = m[:, None, :, None] * m[:, None, None, :]
    return masked_mse(student_scores, teacher_scores, pairs)


def cosine_hidden_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """DistilBERT's cosine embedding loss: mean over real tokens of 1 - cos(h_s, h_t)."""
    student_hidden, teacher_hidden = _wide(student_hidden, teacher_hidden)
    cos = F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)
    m = attention_mask.to(cos.dtype)
    return ((1.0 - cos) * m).sum() / m.sum().clamp_min(1.0)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform map g(m) = m * L_T / L_S for m = 0..L_S (0 is the embedding layer),
    rounded half up to a layer when L_T is not a multiple of L_S."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"expected 1 <= student layers ({student_layers}) <= teacher layers ({teacher_layers})")
    return [int(m * teacher_layers / student_layers + 0.5) for m in range(student_layers + 1)]
