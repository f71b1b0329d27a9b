"""The KD loss against hand computations."""

import math

import pytest
import torch

from bench.models.losses import kd_loss, log_softmax, mean_teacher_logits


def test_kd_loss_matches_hand_computation_t1():
    # student uniform over 2 classes; teacher logits (ln 3, 0) -> p_t = (3/4, 1/4); label 0
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    y = torch.tensor([0])
    ce = math.log(2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t, y, temperature=1.0, alpha=0.5).item() == pytest.approx(0.5 * ce + 0.5 * kl, rel=1e-6)


def test_kl_direction_is_teacher_to_student():
    # KL(p_t || p_s) (forward, Hinton et al. 2015), not Gholami & Omar's printed KL(p_s || p_t):
    # with p_t = (3/4, 1/4) and p_s = (1/2, 1/2) the two differ (0.1308 vs 0.1438)
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    forward = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    got = kd_loss(s, t, y, temperature=1.0, alpha=0.0).item()
    assert got == pytest.approx(forward, rel=1e-6) and abs(got - reverse) > 0.01


def test_kd_loss_has_t_squared_factor():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    y = torch.tensor([1])
    T = 2.0
    p0 = math.sqrt(3) / (math.sqrt(3) + 1)  # softmax((ln 3)/2, 0)
    kl = p0 * math.log(p0 / 0.5) + (1 - p0) * math.log((1 - p0) / 0.5)
    expected = 0.3 * math.log(2) + 0.7 * T**2 * kl
    assert kd_loss(s, t, y, temperature=T, alpha=0.3).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_is_a_batch_mean_and_alpha_one_is_ce():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    per_example = [kd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], 3.0, 0.2).item() for i in range(4)]
    assert kd_loss(s, t, y, 3.0, 0.2).item() == pytest.approx(sum(per_example) / 4, rel=1e-5)
    assert kd_loss(s, t, y, 3.0, 1.0).item() == pytest.approx(torch.nn.functional.cross_entropy(s, y).item())
    # a student equal to the teacher pays no KL
    assert kd_loss(t, t, y, 3.0, 0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_mean_teacher_logits_averages_logits_not_probabilities():
    a = torch.tensor([[2.0, 0.0]])
    b = torch.tensor([[0.0, 4.0]])
    assert torch.equal(mean_teacher_logits(torch.stack([a, b])), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError):
        mean_teacher_logits(a)


def test_log_softmax_and_kd_loss_equal_torchs_up_to_rounding():
    """``log_softmax`` (x - logsumexp) against ``F.log_softmax``, and kd_loss's values and gradients
    against the loss written with torch's own ``cross_entropy``, ``log_softmax`` and ``kl_div``."""
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=g) * 8
    assert (log_softmax(x) - F.log_softmax(x, dim=-1)).abs().max().item() < 1e-5
    s, t = torch.randn(64, 10, generator=g, requires_grad=True), torch.randn(64, 10, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    ours = kd_loss(s, t, y, 4.0, 0.3)
    (grad,) = torch.autograd.grad(ours, s)
    kl = F.kl_div(F.log_softmax(s / 4, -1), F.log_softmax(t / 4, -1), reduction="batchmean", log_target=True)
    ref = 0.3 * F.cross_entropy(s, y) + 0.7 * 16 * kl
    (ref_grad,) = torch.autograd.grad(ref, s)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6) and (grad - ref_grad).abs().max().item() < 1e-7
