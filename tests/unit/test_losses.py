import math

import torch
import torch.nn.functional as F

from edgekd.distill.losses import AttentionMapLoss, HiddenStateLoss, SoftTargetLoss


def test_soft_target_loss_matches_formula():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]])
    y = torch.tensor([1, 2])
    T, alpha = 2.0, 0.7
    p_t = F.softmax(t / T, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean()
    expected = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)
    assert torch.allclose(SoftTargetLoss(T, alpha)(s, t, y), expected, atol=1e-6)


def test_soft_target_golden_value():
    s = torch.tensor([[0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0]])
    loss = SoftTargetLoss(temperature=1.0, alpha=1.0)(s, t, torch.tensor([0]))
    # KL between softmax([1,0]) and softmax([0,1]) = (2*sigmoid(1) - 1) * 1
    expected = (2 / (1 + math.exp(-1)) - 1) * 1.0
    assert abs(loss.item() - expected) < 1e-6


def test_identical_logits_leave_only_hard_term():
    z = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    assert torch.allclose(SoftTargetLoss(3.0, 0.5)(z, z, y), 0.5 * F.cross_entropy(z, y), atol=1e-6)


def test_hidden_loss_projects_and_ignores_padding():
    torch.manual_seed(0)
    loss = HiddenStateLoss({0: 1}, student_width=4, teacher_width=6)
    assert isinstance(loss.projections["0"], torch.nn.Linear)
    s = tuple(torch.randn(2, 5, 4) for _ in range(2))
    t = tuple(torch.randn(2, 5, 6) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    base = loss(s, t, mask)
    t_changed = tuple(x.clone() for x in t)
    t_changed[2][0, 3:] += 100.0  # only padded positions of the mapped layer change
    assert torch.allclose(loss(s, t_changed, mask), base)
    same = HiddenStateLoss({0: 0}, 6, 6)
    assert same(t, t, mask).item() == 0.0


def test_attention_loss_zero_for_equal_maps_and_positive_otherwise():
    a = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    b = torch.softmax(torch.randn(2, 2, 5, 5), -1)
    mask = torch.ones(2, 5, dtype=torch.long)
    loss = AttentionMapLoss({0: 0})
    assert loss((a,), (a,), mask).item() < 1e-6
    assert loss((b,), (a,), mask).item() > 0
