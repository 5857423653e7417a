"""The seed detector: MobileNetV2 features, channel attention, a small MLP head, one logit.

Everything that builds, freezes or wraps the network lives here so training, export, the benchmark
and the tests all construct the same module. torchvision's 1000-class ImageNet head is never part
of the model; ImageNet weights are loaded from a local file only (nothing downloads).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from moderation.contract import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

FEATURE_CHANNELS = 1280
ATTENTION_HIDDEN = 256
# MobileNetV2 ``features`` has 19 blocks: 0 = stem conv, 1..17 = inverted residuals, 18 = 1x1 conv.
BACKBONE_BLOCKS = 19
# The seed's intent: early layers frozen, the last ones trainable. With ImageNet weights we keep
# the first 14 blocks (up to the 96-channel stage) fixed and fine-tune the 160/320-channel stages
# and the final 1x1 conv. From scratch there is nothing learned to keep, but backpropagating
# through the two 112x112 blocks (stem and first inverted residual) costs 3-5x the time on CPU;
# from scratch they stay frozen as a fixed random filter bank and everything after them trains.
DEFAULT_FREEZE_BLOCKS_PRETRAINED = 14
DEFAULT_FREEZE_BLOCKS_SCRATCH = 2
WEIGHTS_GLOB = "mobilenet_v2-*.pth"
HOW_TO_PROVIDE_WEIGHTS = (
    "ImageNet weights for MobileNetV2 were not found. Either copy torchvision's "
    "'mobilenet_v2-<hash>.pth' (e.g. mobilenet_v2-b0353104.pth or mobilenet_v2-7ebf99e0.pth, from "
    'a machine with internet access: python -c "import torchvision; '
    "torchvision.models.mobilenet_v2(weights='IMAGENET1K_V1')\") into {cache}, or pass "
    "--weights FILE, or train without them using --from-scratch."
)


class WeightsNotFound(FileNotFoundError):
    """Raised when pretrained weights were requested but no local file holds them."""


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation style gate: GAP → 1280→256 → BN → ReLU → Dropout → 256→1280 → σ."""

    def __init__(self, channels: int = FEATURE_CHANNELS, hidden: int = ATTENTION_HIDDEN) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weights = self.gate(features.mean(dim=(2, 3)))
        return features * weights[:, :, None, None]


def build_classifier(channels: int = FEATURE_CHANNELS) -> nn.Sequential:
    """Returns the seed head: Dropout 0.5 → 256 → BN → ReLU → Dropout 0.35 → 64 → … → 1."""
    return nn.Sequential(
        nn.Dropout(0.5),
        nn.Linear(channels, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.35),
        nn.Linear(256, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(inplace=True),
        nn.Dropout(0.25),
        nn.Linear(64, 1),
    )


class DeepfakeDetector(nn.Module):
    """MobileNetV2 features → channel attention → GAP → classifier → one logit per image.

    Takes float NCHW images already normalised with ImageNet statistics; see
    :class:`ExportWrapper` for the uint8 NHWC serving entry point.
    """

    def __init__(
        self, *, freeze_blocks: int = DEFAULT_FREEZE_BLOCKS_PRETRAINED, freeze_bn_stats: bool = True
    ) -> None:
        super().__init__()
        self.features = mobilenet_v2(weights=None).features
        self.attention = ChannelAttention()
        self.classifier = build_classifier()
        self.freeze_blocks = 0
        # Pretrained: frozen blocks keep their ImageNet BatchNorm statistics. From scratch there are
        # none worth keeping (identity BN on random convs shrinks the signal to a constant), so the
        # frozen blocks' BatchNorm layers keep estimating statistics while their weights stay fixed.
        self.freeze_bn_stats = freeze_bn_stats
        self.set_frozen_blocks(freeze_blocks)

    def set_frozen_blocks(self, count: int) -> None:
        """Freezes the first ``count`` backbone blocks (0..19); the rest stay trainable."""
        if not 0 <= count <= BACKBONE_BLOCKS:
            raise ValueError(f"freeze_blocks must be between 0 and {BACKBONE_BLOCKS}, got {count}")
        self.freeze_blocks = count
        for index, block in enumerate(self.features):
            for param in block.parameters():
                param.requires_grad = index >= count
        self._frozen_bn_to_eval()

    def _frozen_bn_to_eval(self) -> None:
        if not self.freeze_bn_stats:
            return
        for block in list(self.features)[: self.freeze_blocks]:
            block.eval()

    def train(self, mode: bool = True) -> DeepfakeDetector:
        super().train(mode)
        if mode:
            self._frozen_bn_to_eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.attention(self.features(images))
        pooled = features.mean(dim=(2, 3))
        return self.classifier(pooled)


class ExportWrapper(nn.Module):
    """The served graph: uint8 NHWC RGB → ImageNet normalisation → detector → logit [N, 1]."""

    def __init__(self, model: DeepfakeDetector) -> None:
        super().__init__()
        self.model = model
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        return self.model(x * self.scale - self.shift)


def normalize_uint8_nhwc(images: torch.Tensor) -> torch.Tensor:
    """Returns float NCHW normalised input from uint8 NHWC images (same maths as the graph)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    return x * (1.0 / (255.0 * std)) - mean / std


def torch_cache_dir() -> Path:
    """Returns the torch hub checkpoint folder torchvision would use for its weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """Returns the local ImageNet MobileNetV2 weights file, or raises :class:`WeightsNotFound`."""
    cache = torch_cache_dir()
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsNotFound(f"--weights {path} does not exist; expected a .pth state dict")
        return path
    matches = sorted(glob.glob(str(cache / WEIGHTS_GLOB)))
    if not matches:
        raise WeightsNotFound(HOW_TO_PROVIDE_WEIGHTS.format(cache=cache))
    return Path(matches[-1])


def load_imagenet_features(model: DeepfakeDetector, path: Path) -> None:
    """Loads torchvision MobileNetV2 ImageNet weights into ``model.features`` (head ignored)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise ValueError(f"{path} holds no 'features.*' tensors; expected torchvision MobileNetV2")
    model.features.load_state_dict(features, strict=True)
    logger.info("loaded ImageNet MobileNetV2 features from %s", path)


def build_model(
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    freeze_blocks: int | None = None,
) -> DeepfakeDetector:
    """Returns the detector, ImageNet-initialised when asked; freezing defaults by init."""
    if freeze_blocks is None:
        freeze_blocks = (
            DEFAULT_FREEZE_BLOCKS_PRETRAINED if pretrained else DEFAULT_FREEZE_BLOCKS_SCRATCH
        )
    model = DeepfakeDetector(freeze_blocks=freeze_blocks, freeze_bn_stats=pretrained)
    if pretrained:
        load_imagenet_features(model, find_imagenet_weights(weights))
    else:
        logger.info("backbone randomly initialised (training from scratch)")
    return model


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Returns the number of (trainable) parameters in a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
