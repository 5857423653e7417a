"""On-demand Grad-CAM for verdicts stored without a map (model versions exported before ``cam``).

Computed from the version's ``checkpoint.pt`` on the scorer's pixels and cached as a PNG; torch is
imported lazily, only when a reviewer asks for such a heatmap.
"""

from __future__ import annotations

import io
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from moderation.explanation import OVERLAY_ALPHA, colorize
from moderation.preprocess import DEFAULT_LIMITS, ImageLimits, load_image

logger = logging.getLogger(__name__)

_model_lock = threading.Lock()


class HeatmapUnavailable(RuntimeError):
    """No heatmap can be made (no checkpoint, no torch); the message says what is missing."""


@lru_cache(maxsize=4)
def _load_model(checkpoint: Path) -> Any:
    try:
        from training.checkpoint import model_from_checkpoint
    except ImportError as exc:  # torch is an optional dependency of the API
        raise HeatmapUnavailable(
            f"torch is not installed ({exc}); expected the train extra"
        ) from exc
    model, _state = model_from_checkpoint(checkpoint)
    return model


def cam(model: Any, image: np.ndarray) -> np.ndarray:
    """Returns the Grad-CAM map in [0, 1] of the fake logit, same height/width as ``image``."""
    import torch
    import torch.nn.functional as F

    from training.model import normalize_uint8_nhwc

    x = normalize_uint8_nhwc(torch.from_numpy(np.array(image, copy=True))[None])
    with torch.enable_grad():
        activations = model.attention(model.features(x)).detach().requires_grad_(True)
        logit = model.classifier(activations.mean(dim=(2, 3)))
        (grad,) = torch.autograd.grad(logit.sum(), activations)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    heat = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    heat = F.interpolate(heat, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    peak = float(heat.max())
    return (heat / peak).numpy() if peak > 0 else np.zeros(image.shape[:2], dtype=np.float32)


def overlay_png(*, data: bytes, checkpoint: Path, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """Returns a PNG of the model input with its Grad-CAM heatmap blended over it."""
    if not checkpoint.is_file():
        raise HeatmapUnavailable(f"no checkpoint at {checkpoint}; expected checkpoint.pt there")
    image = load_image(data, limits)
    with _model_lock:  # one model instance: autograd passes run one at a time
        heat = cam(_load_model(checkpoint), image)
    blended = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colorize(heat)
    buffer = io.BytesIO()
    Image.fromarray(blended.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def cached_overlay(
    *,
    cache_dir: Path,
    submission_id: str,
    version: str,
    data: bytes,
    checkpoint: Path,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> bytes:
    """Returns the item's overlay PNG, computing and caching it on first request."""
    path = cache_dir / f"{submission_id}-v{version}.png"
    if path.is_file():
        return path.read_bytes()
    png = overlay_png(data=data, checkpoint=checkpoint, limits=limits)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_bytes(png)
    partial.replace(path)
    logger.info("Grad-CAM for %s (version %s) cached", submission_id, version)
    return png
