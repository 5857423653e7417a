"""Binary focal loss on logits, the seed's "improved focal loss" (α = 0.5, γ = 3.0).

Focal loss down-weights examples the model already gets right, so training keeps pushing on the
hard fakes. Everything is computed in log space from the logits, so logits of ±100 give finite
losses and gradients.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.5
DEFAULT_GAMMA = 3.0


def binary_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = DEFAULT_ALPHA,
    gamma: float = DEFAULT_GAMMA,
    reduction: str = "mean",
) -> torch.Tensor:
    """Returns α_t · (1 − p_t)^γ · BCE(logit, target); targets are 0 (real) or 1 (fake).

    ``alpha`` weighs the fake class (1 − alpha the real class); with γ = 0 and α = 0.5 the loss is
    half the binary cross-entropy.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of mean, sum, none; got {reduction!r}")
    logits = logits.reshape(-1).float()
    targets = targets.reshape(-1).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # log(1 - p_t): for target 1 that is log σ(−x), for target 0 log σ(x); stable for any x.
    log_one_minus_pt = targets * F.logsigmoid(-logits) + (1 - targets) * F.logsigmoid(logits)
    modulator = torch.exp(gamma * log_one_minus_pt) if gamma else torch.ones_like(logits)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * modulator * bce
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class FocalLoss(nn.Module):
    """Module form of :func:`binary_focal_loss`."""

    def __init__(self, *, alpha: float = DEFAULT_ALPHA, gamma: float = DEFAULT_GAMMA) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return binary_focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma)
