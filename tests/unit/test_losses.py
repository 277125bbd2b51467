import math

import torch
import torch.nn.functional as F

import pytest

from edgekd.distill.losses import (AttentionMapLoss, ContrastiveLoss, HiddenStateLoss, SoftTargetLoss,
                                   TemperatureSchedule)
from edgekd.distill.relations import RelationLoss, relation_log_probs


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


def test_soft_target_temperature_override_keeps_t_squared_scaling():
    s, t, y = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 3])
    assert torch.allclose(SoftTargetLoss(2.0, 0.6)(s, t, y, temperature=5.0), SoftTargetLoss(5.0, 0.6)(s, t, y))
    assert not torch.allclose(SoftTargetLoss(2.0, 0.6)(s, t, y, temperature=5.0), SoftTargetLoss(2.0, 0.6)(s, t, y))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_temperature_schedule_hits_start_and_end(kind):
    schedule = TemperatureSchedule(start=4.0, end=1.0, kind=kind, total_steps=11)
    assert schedule(0) == 4.0
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(25) == pytest.approx(1.0)  # past the plan (never in fit) it stays at the end
    assert schedule(5) == pytest.approx(2.5)  # both are at the mean halfway
    values = [schedule(k) for k in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly falling


def test_temperature_schedule_golden_values():
    linear = TemperatureSchedule(4.0, 1.0, "linear", total_steps=5)  # steps 0..4
    assert [linear(k) for k in range(5)] == pytest.approx([4.0, 3.25, 2.5, 1.75, 1.0])
    cosine = TemperatureSchedule(4.0, 1.0, "cosine", total_steps=5)
    # 1 + 3 * (1 + cos(pi * k / 4)) / 2: flatter than linear near both ends
    root_half = 0.5**0.5
    expected = [4.0, 1 + 1.5 * (1 + root_half), 2.5, 1 + 1.5 * (1 - root_half), 1.0]
    assert [cosine(k) for k in range(5)] == pytest.approx(expected)


def test_constant_temperature_schedule_is_constant():
    schedule = TemperatureSchedule(2.0, 7.0, "constant", total_steps=10)
    assert {schedule(k) for k in range(15)} == {2.0}


def test_contrastive_golden_value_and_identity_start():
    loss = ContrastiveLoss(student_width=2, teacher_width=2, temperature=0.1)
    assert torch.equal(loss.projection.weight, torch.eye(2))  # equal widths: starts as the identity
    cls = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # orthogonal, so only the norms differ
    # logits [[10, 0], [0, 10]]: each row and column costs log(1 + e^-10)
    assert loss(cls, cls).item() == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-3)  # float32


def test_contrastive_loss_lower_for_aligned_than_shuffled_pairs():
    torch.manual_seed(0)
    loss = ContrastiveLoss(student_width=8, teacher_width=16, temperature=0.1)
    student = torch.randn(6, 8)
    with torch.no_grad():
        teacher = loss.projection(student) + 0.1 * torch.randn(6, 16)  # each teacher vector matches its student
    aligned = loss(student, teacher)
    shuffled = loss(student, teacher[torch.tensor([1, 2, 3, 4, 5, 0])])
    assert aligned.item() < 0.1 < shuffled.item()
    aligned.backward()
    assert loss.projection.weight.grad.abs().sum() > 0  # the projection is trainable through the loss


def test_relation_log_probs_golden_and_pad_keys_excluded():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # [B=1, S=3, A=2]; the third position is padding
    mask = torch.tensor([[True, True, False]])
    probs = relation_log_probs(x, mask, heads=1).exp()  # [1, 1, 3, 3]
    e = math.exp(1 / math.sqrt(2))  # q0.q0 = 1, q0.q1 = 0, scaled by 1 / sqrt(d = 2)
    assert probs[0, 0, 0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1), 0.0])
    two_heads = relation_log_probs(x, mask, heads=2).exp()  # d = 1: head 0 sees [1, 0, 5], head 1 [0, 1, 5]
    assert two_heads[0, 0, 0].tolist() == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1), 0.0])
    assert two_heads[0, 1, 0].tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_relation_loss_zero_for_equal_qkv_ignores_padding_and_compares_different_widths():
    torch.manual_seed(0)
    teacher = {3: {n: torch.randn(2, 5, 8) for n in "qkv"}}  # [B, S, A_t = 8]
    student = {1: {n: torch.randn(2, 5, 4) for n in "qkv"}}  # fewer heads: A_s = 4
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    loss = RelationLoss({1: 3}, ("qq", "kk", "vv"), relation_heads=2)
    assert RelationLoss({3: 3}, ("vv",), 2)(teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)
    base = loss(student, teacher, mask)
    assert base.item() > 0.01
    changed = {3: {n: v.clone() for n, v in teacher[3].items()}}
    for v in changed[3].values():
        v[0, 3:] += 100.0  # only padded positions change
    assert torch.allclose(loss(student, changed, mask), base)
    assert not torch.allclose(RelationLoss({1: 3}, ("qq",), 2)(student, teacher, mask), base)


def test_relation_and_contrastive_losses_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    qkv = ({0: {n: torch.randn(2, 6, 8) for n in "qkv"}}, {0: {n: torch.randn(2, 6, 8) for n in "qkv"}})
    mask = torch.ones(2, 6, dtype=torch.long)
    relation, contrastive = RelationLoss({0: 0}, ("qq", "vv"), 2), ContrastiveLoss(8, 8, 0.1)
    cls = (torch.randn(4, 8), torch.randn(4, 8))
    exact = relation(*qkv, mask), contrastive(*cls)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = relation(*qkv, mask), contrastive(*cls)
    assert all(m.dtype == torch.float32 for m in mixed)
    assert torch.allclose(mixed[0], exact[0], rtol=1e-6) and torch.allclose(mixed[1], exact[1], rtol=1e-6)
