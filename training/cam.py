"""Grad-CAM as forward operations, so the served graph returns the map beside the logit.

The head's backward pass is written out by hand (no autograd at serving time) and the map scaled
by ``max(peak, WEAK_MAP * S)``; :func:`autograd_cam` is the reference (docs/design.md,
"Explanations").
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from training.model import DeepfakeDetector, ExportWrapper

# A map whose peak is below this fraction of the largest evidence magnitude stays faint (< 1).
WEAK_MAP = 0.25
CAM_FLOOR = 1e-12  # guards the division for an all-zero feature map
_M = TypeVar("_M", bound=nn.Module)


def _bn_scale(bn: nn.BatchNorm1d) -> torch.Tensor:
    """Returns d BN(z) / d z in eval mode: gamma / sqrt(running_var + eps)."""
    assert bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    return scale * bn.weight if bn.affine else scale


def _linear_bn_relu(
    x: torch.Tensor, linear: nn.Linear, bn: nn.BatchNorm1d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (relu output, its derivative factor k * [pre-activation > 0])."""
    pre = bn(linear(x))
    return torch.relu(pre), _bn_scale(bn) * (pre > 0).to(pre.dtype)


def _layer(sequence: nn.Sequential, index: int, kind: type[_M]) -> _M:
    layer = sequence[index]
    if not isinstance(layer, kind):
        raise TypeError(f"layer {index} is {type(layer).__name__}; expected {kind.__name__}")
    return layer


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
    hidden, slope1 = _linear_bn_relu(pooled, lin1, bn1)
    g = torch.sigmoid(lin2(hidden))
    attended = pooled * g
    r1, k1 = _linear_bn_relu(attended, lin_a, bn_a)
    r2, k2 = _linear_bn_relu(r1, lin_b, bn_b)
    logit = lin_c(r2)
    # Back through the classifier: W_c, then (k2 ⊙ ·) W_b, then (k1 ⊙ ·) W_a.
    v = (k2 * lin_c.weight) @ lin_b.weight  # [B, 256]
    v = (k1 * v) @ lin_a.weight  # [B, C] = d logit / d attended
    through_gate = ((v * pooled * g * (1 - g)) @ lin2.weight) * slope1  # [B, 256]
    return logit, v * g + through_gate @ lin1.weight


def cam_from_features(
    model: DeepfakeDetector, features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (logit [B, 1], Grad-CAM [B, H, W] in [0, 1]) from the last feature map."""
    pooled = features.mean(dim=(2, 3))
    logit, grad = head_gradient(model, pooled)
    weights = grad / (features.shape[2] * features.shape[3])
    signed = torch.einsum("bc,bchw->bhw", weights, features)
    magnitude = torch.einsum("bc,bchw->bhw", weights.abs(), features.abs())
    return logit, scale_map(signed, magnitude)


def scale_map(signed: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Returns ReLU(signed) [B, H, W] divided by max(peak, WEAK_MAP * largest magnitude)."""
    heat = torch.relu(signed)
    peak = heat.amax(dim=(1, 2), keepdim=True)
    scale = torch.maximum(peak, WEAK_MAP * magnitude.amax(dim=(1, 2), keepdim=True))
    return heat / scale.clamp_min(CAM_FLOOR)


class CamExportWrapper(ExportWrapper):
    """The served graph with explanations: uint8 NHWC RGB → (logit [B, 1], cam [B, 7, 7])."""

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
    return scale_map(contributions.sum(dim=1), contributions.abs().sum(dim=1))
