"""Eq. 5 (DCR) and Eq. 9 (DMM) against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from dckd.losses import LabelConsistencyOps, augment, distribution_loss, dynamic_contrastive_loss, revert


def t(values: list[float]) -> torch.Tensor:
    """A (B, 1, 1, 1) tensor: one scalar feature per image."""
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1)


def test_eq5_single_level_batch_mean_and_negative_sum() -> None:
    # anchor (1, 3), positive (2, 3): |a-p| mean over the batch = (1 + 0) / 2 = 0.5
    # negatives N=2: n1 = (0, 0) -> (1 + 3) / 2 = 2 ; n2 = (1, 5) -> (0 + 2) / 2 = 1 ; sum = 3
    a, p = t([1, 3]), t([2, 3])
    negs = torch.cat([t([0, 0]), t([1, 5])])
    loss = dynamic_contrastive_loss([a], [p], [negs], [1.0], eps=0.0)
    assert loss.item() == pytest.approx(0.5 / 3, abs=1e-12)


def test_eq5_two_levels_with_weights_and_eps() -> None:
    # level 1 (w 0.5): a=(1,2) p=(1,4): 1 ; n1=(0,2): 0.5 ; n2=(3,5): 2.5 -> 1/3 * 0.5
    # level 2 (w 1.0): a=2 p=0: 2 ; n1=1: 1 ; n2=6: 4 -> 2/5
    a1 = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    p1 = torch.tensor([[[[1.0, 4.0]]]], dtype=torch.float64)
    n1 = torch.tensor([[[[0.0, 2.0]]], [[[3.0, 5.0]]]], dtype=torch.float64)
    a2, p2, n2 = t([2]), t([0]), t([1, 6])
    eps = 1e-7
    loss = dynamic_contrastive_loss([a1, a2], [p1, p2], [n1, n2], [0.5, 1.0], eps=eps)
    assert loss.item() == pytest.approx(0.5 * 1 / (3 + eps) + 2 / (5 + eps), abs=1e-12)


def test_eq5_gradient_reaches_only_the_anchor() -> None:
    a = t([1.0, 3.0]).requires_grad_()
    p = t([2.0, 3.0]).requires_grad_()
    n = t([0.0, 0.0]).requires_grad_()
    dynamic_contrastive_loss([a], [p], [n], [1.0], eps=0.0).backward()
    assert p.grad is None and n.grad is None
    # L = d_ap/d_an with d_ap = (|a1-2| + |a2-3|)/2 and d_an = (|a1| + |a2|)/2 at a = (1, 3):
    # dL/da1 = (-1/2)/2 - 0.5*(1/2)/4 = -0.3125 ; dL/da2 = 0 (|a2-3| has sign 0) - 0.5*(1/2)/4 = -0.0625
    assert a.grad.view(-1).tolist() == pytest.approx([-0.3125, -0.0625], abs=1e-12)


def test_eq9_cross_entropy_by_hand() -> None:
    # position 1: teacher softmax([0, ln 3]) = (1/4, 3/4); student softmax([0, 0]) = (1/2, 1/2)
    #   CE = -(1/4 ln 1/2 + 3/4 ln 1/2) = ln 2
    # position 2: student softmax([ln 3, 0]) = (3/4, 1/4): CE = -(1/4 ln 3/4 + 3/4 ln 1/4)
    teacher = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])
    student = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    expected = (math.log(2) - (0.25 * math.log(0.75) + 0.75 * math.log(0.25))) / 2
    assert distribution_loss(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_eq9_released_double_softmax_differs_as_computed_by_hand() -> None:
    # released: F.cross_entropy(softmax(s), C_T) = -sum C_T log softmax(softmax(s))
    teacher = torch.tensor([[0.0, math.log(3)]])
    student = torch.tensor([[math.log(3), 0.0]])
    p = (0.75, 0.25)
    lse = math.log(math.exp(p[0]) + math.exp(p[1]))
    expected = -(0.25 * (p[0] - lse) + 0.75 * (p[1] - lse))
    assert distribution_loss(student, teacher, released_double_softmax=True).item() == pytest.approx(
        expected, abs=1e-6)
    assert distribution_loss(student, teacher).item() != pytest.approx(expected, abs=1e-3)


def test_eq9_is_minimised_by_the_teacher_distribution() -> None:
    teacher = torch.randn(5, 7)
    loss_at_teacher = distribution_loss(teacher.clone(), teacher)
    entropy = -(teacher.softmax(-1) * teacher.log_softmax(-1)).sum(-1).mean()
    assert loss_at_teacher.item() == pytest.approx(entropy.item(), abs=1e-6)
    assert distribution_loss(torch.randn(5, 7), teacher) > loss_at_teacher


def test_label_consistency_revert_undoes_augment_in_reverse_order() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 5, 5, generator=g)
    ops = LabelConsistencyOps.draw(64, 0.5, g, square=True)
    assert ops.mask.any(0).all()  # every operation is drawn for some image
    assert torch.equal(revert(augment(x, ops), ops), x)
    # transpose then flip_w is a rotation: applying the same order again would not undo it
    one = LabelConsistencyOps(mask=torch.tensor([[False, False, True, True]]))
    img = torch.arange(9.0).view(1, 1, 3, 3)
    assert torch.equal(augment(img, one), img.flip(-1).transpose(-2, -1))
    assert torch.equal(revert(augment(img, one), one), img)


def test_label_consistency_never_transposes_non_square_batches() -> None:
    g = torch.Generator().manual_seed(0)
    ops = LabelConsistencyOps.draw(100, 1.0, g, square=False)
    assert not ops.mask[:, 3].any() and ops.mask[:, :3].all()
