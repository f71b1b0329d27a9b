"""Pure loss functions. One convention, pinned and recorded with every result
(``bench.methods.KD_CONVENTION``):

    L = alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

KL summed over classes, everything averaged over the batch; ``t`` is the mean of the k
teachers' logits (Ilichev et al. 2021, eq. 9 with the intended roles).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    ce = F.cross_entropy(student_logits, labels)
    if alpha >= 1.0:
        return ce
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl
