"""The second built-in detector: resampling residuals, then a light CNN (``residual_detector``).

NPR-style: the network sees only the picture minus its down-then-up-sampled copy; same input as
the seed, so training, export and evaluation are shared (docs/design.md, "Several detectors").
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

ARCH = "residual"
ARCHITECTURE = (
    "resampling residual (image minus its 2x down/up-sampled copy, in the spirit of NPR) "
    "+ 4 strided conv blocks + linear head"
)
WIDTHS = (16, 32, 64, 96)


def resampling_residual(images: torch.Tensor) -> torch.Tensor:
    """Returns images minus their 2x2-average-down, nearest-up copy (same shape; even H, W)."""
    down = F.avg_pool2d(images, kernel_size=2, stride=2)
    return images - F.interpolate(down, scale_factor=2.0, mode="nearest")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResidualDetector(nn.Module):
    """Residual → 4 strided conv blocks → GAP → dropout → linear → one logit per image."""

    architecture = ARCHITECTURE

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        channels = (3, *widths)
        self.features = nn.Sequential(*(_block(a, b) for a, b in itertools.pairwise(channels)))
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(widths[-1], 1))
        # The residual of a [-2, 2]-range image is small; a fixed gain keeps BN's input sensible.
        self.gain = 4.0
        self.freeze_blocks = 0  # nothing frozen; read by the shared training loop's log line

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(resampling_residual(images) * self.gain)
        return self.head(features.mean(dim=(2, 3)))


def build_residual() -> ResidualDetector:
    """Returns a randomly initialised residual detector (it has no pretrained weights)."""
    return ResidualDetector()
