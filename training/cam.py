"""Grad-CAM as forward operations, so the served graph returns the map beside the logit.

The head's backward pass is written out by hand (no autograd at serving time) and the map scaled
by ``max(peak, WEAK_MAP * S)``; :func:`autograd_cam` is the reference (docs/design.md,
"Explanations").
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from moderation import contract
from training.model import FEATURE_CHANNELS, DeepfakeDetector, ExportWrapper

# A map whose peak is below this fraction of the largest evidence magnitude stays faint (< 1).
WEAK_MAP = 0.25
CAM_FLOOR = 1e-12  # guards the division for an all-zero feature map
CAM_CELLS = contract.CAM_SHAPE[0] * contract.CAM_SHAPE[1]
_M = TypeVar("_M", bound=nn.Module)


def _bn_scale(bn: nn.BatchNorm1d) -> torch.Tensor:
    """Returns d BN(z) / d z in eval mode: gamma / sqrt(running_var + eps)."""
    assert bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    return scale * bn.weight if bn.affine else scale


def _layer(sequence: nn.Sequential, index: int, kind: type[_M]) -> _M:
    layer = sequence[index]
    if not isinstance(layer, kind):
        raise TypeError(f"layer {index} is {type(layer).__name__}; expected {kind.__name__}")
    return layer


def check_non_negative_features(model: DeepfakeDetector) -> None:
    """Raises unless the last feature map ends in ReLU/ReLU6 (the map uses ``|F| = F``)."""
    last = list(model.features.modules())[-1]
    if not isinstance(last, nn.ReLU | nn.ReLU6):
        raise TypeError(f"the feature map ends in {type(last).__name__}; expected ReLU or ReLU6")


def head_gradient(
    model: DeepfakeDetector, pooled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (logit [B, 1], d logit / d pooled [B, C]) for the feature map's spatial mean."""
    gate, cls = model.attention.gate, model.classifier
    lin1, bn1 = _layer(gate, 0, nn.Linear), _layer(gate, 1, nn.BatchNorm1d)
    lin2 = _layer(gate, 4, nn.Linear)
    lin_a, bn_a = _layer(cls, 1, nn.Linear), _layer(cls, 2, nn.BatchNorm1d)
    lin_b, bn_b = _layer(cls, 5, nn.Linear), _layer(cls, 6, nn.BatchNorm1d)
    lin_c = _layer(cls, 9, nn.Linear)
    hidden = torch.relu(bn1(lin1(pooled)))
    g = torch.sigmoid(lin2(hidden))
    attended = pooled * g
    r1 = torch.relu(bn_a(lin_a(attended)))
    r2 = torch.relu(bn_b(lin_b(r1)))
    logit = lin_c(r2)
    # Back through the classifier: d relu(BN(z)) / dz = k * [relu > 0]. k_b scales W_c's row and
    # k_a W_b's columns (constants); W_a, the large one, is used as it is.
    u = torch.where(r2 > 0, _bn_scale(bn_b) * lin_c.weight, 0.0)  # [B, 64]
    v = torch.where(r1 > 0, u @ (lin_b.weight * _bn_scale(bn_a)), 0.0) @ lin_a.weight  # [B, C]
    # v = d logit / d attended; through the gate: s * g * (1 - g) = attended * (1 - g).
    t = (v * attended * (1 - g)) @ lin2.weight * _bn_scale(bn1)  # [B, 256]
    return logit, v * g + torch.where(hidden > 0, t, 0.0) @ lin1.weight


def cam_from_features(
    model: DeepfakeDetector, features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (logit [B, 1], Grad-CAM [B, 7, 7] in [0, 1]) from the last feature map.

    ``features`` is the non-negative [B, 1280, 7, 7] map of a 224 × 224 input; its shape is
    written as constants so the graph does no shape arithmetic.
    """
    pooled = features.mean(dim=(2, 3))
    logit, grad = head_gradient(model, pooled)
    weights = torch.cat([grad, grad.abs()], dim=1).reshape(-1, 2, FEATURE_CHANNELS)
    maps = weights @ features.reshape(-1, FEATURE_CHANNELS, CAM_CELLS)  # signed, magnitude
    return logit, scale_map(maps).reshape(-1, *contract.CAM_SHAPE)


def scale_map(maps: torch.Tensor) -> torch.Tensor:
    """Returns ReLU(signed) [B, N] divided by max(peak, WEAK_MAP * largest magnitude).

    ``maps`` [B, 2, N] holds the signed map and the magnitude map over N positions. The
    magnitude is never negative and never below the signed map's absolute value, so the largest
    signed value can stand for the peak of its ReLU: when it is negative, the other term wins.
    """
    weak = maps.new_tensor([1.0, WEAK_MAP])
    scale = (maps.amax(dim=2) * weak).amax(dim=1, keepdim=True)
    return torch.relu(maps[:, 0]) / scale.clamp_min(CAM_FLOOR)


class CamExportWrapper(ExportWrapper):
    """The served graph with explanations: uint8 NHWC RGB → (logit [B, 1], cam [B, 7, 7])."""

    def __init__(self, model: DeepfakeDetector) -> None:
        check_non_negative_features(model)
        super().__init__(model)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        return cam_from_features(self.model, self.model.features(x * self.scale - self.shift))


def autograd_cam(model: DeepfakeDetector, images: torch.Tensor) -> torch.Tensor:
    """Returns Grad-CAM [B, H, W] in [0, 1] by torch autograd (the reference for the graph)."""
    model.eval()
    with torch.enable_grad():
        features = model.features(images).detach().requires_grad_(True)
        logit = model.classifier(model.attention(features).mean(dim=(2, 3)))
        (grad,) = torch.autograd.grad(logit.sum(), features)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    contributions = (weights * features).detach()
    maps = torch.stack([contributions.sum(dim=1), contributions.abs().sum(dim=1)], dim=1)
    return scale_map(maps.flatten(2)).reshape(contributions[:, 0].shape)
