"""Focal loss against hand-computed values, BCE at γ = 0, and stability at extreme logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import FocalLoss, binary_focal_loss


def _hand(logit: float, target: int, alpha: float = 0.5, gamma: float = 3.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    p_t = p if target == 1 else 1 - p
    alpha_t = alpha if target == 1 else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize(("logit", "target"), [(0.0, 1), (2.0, 1), (-1.5, 1), (0.7, 0), (-3.0, 0)])
def test_matches_hand_computed_values(logit: float, target: int) -> None:
    got = binary_focal_loss(torch.tensor([logit]), torch.tensor([target]))
    assert got.item() == pytest.approx(_hand(logit, target), rel=1e-5, abs=1e-7)


def test_known_value_at_zero_logit() -> None:
    # p_t = 0.5: 0.5 * 0.5**3 * ln 2
    got = binary_focal_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert got.item() == pytest.approx(0.0625 * math.log(2), rel=1e-6)


def test_gamma_zero_is_half_bce() -> None:
    logits = torch.linspace(-6, 6, 25)
    targets = (torch.arange(25) % 2).float()
    got = binary_focal_loss(logits, targets, gamma=0.0)
    expected = 0.5 * F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(got, expected)
    got_alpha = binary_focal_loss(logits, targets, alpha=0.25, gamma=0.0, reduction="none")
    weights = torch.where(targets == 1, 0.25, 0.75)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(got_alpha, weights * bce)


def test_stable_for_extreme_logits() -> None:
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    losses = binary_focal_loss(logits, targets, reduction="none")
    assert torch.isfinite(losses).all()
    assert losses[0].item() == pytest.approx(0.0, abs=1e-30)
    assert losses[2].item() == pytest.approx(0.5 * 100.0, rel=1e-4)  # (1-p_t)^γ → 1, BCE → 100
    losses.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_easy_examples_weigh_less_than_in_bce() -> None:
    easy, hard = torch.tensor([4.0]), torch.tensor([-1.0])
    target = torch.tensor([1.0])
    ratio_easy = binary_focal_loss(easy, target) / F.binary_cross_entropy_with_logits(easy, target)
    ratio_hard = binary_focal_loss(hard, target) / F.binary_cross_entropy_with_logits(hard, target)
    assert ratio_easy < ratio_hard


def test_module_and_reductions() -> None:
    logits, targets = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0])
    per_item = binary_focal_loss(logits, targets, reduction="none")
    assert FocalLoss()(logits, targets).item() == pytest.approx(per_item.mean().item())
    assert binary_focal_loss(logits, targets, reduction="sum").item() == pytest.approx(
        per_item.sum().item()
    )
    with pytest.raises(ValueError, match="mean, sum, none"):
        binary_focal_loss(logits, targets, reduction="max")
