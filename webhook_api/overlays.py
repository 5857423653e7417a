"""Grad-CAM overlays for the review dashboard, drawn from the map stored with each verdict.

Verdicts without a map fall back to :mod:`training.gradcam` where torch is installed; anything that
cannot be drawn is still a PNG saying why, so no ``<img>`` is ever broken.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from moderation.blobs import BlobNotFound
from moderation.db import session_scope
from moderation.explanation import overlay, placard
from moderation.models import Submission
from moderation.preprocess import ImageLimits, MediaRejected, decode_image
from webhook_api.state import state

logger = logging.getLogger(__name__)

NO_MAP = (
    "No Grad-CAM map is stored with this verdict (model version {version}; versions exported "
    "before the cam output give none)"
)


@dataclass(frozen=True)
class Overlay:
    """A PNG to send, and whether it is the heatmap (False: a placard saying why not)."""

    png: bytes
    drawn: bool


@dataclass(frozen=True)
class _Item:
    sha: str | None
    model_name: str
    version: str
    explanation: dict[str, Any] | None
    frames: list[dict[str, Any]]


def _load(submission_id: str) -> _Item | None:
    with session_scope(state().session_factory) as db:
        row = db.get(Submission, submission_id)
        if row is None or row.verdict is None:
            return None
        ver = row.verdict
        frames = list((ver.frames or {}).get("frames", []))
        return _Item(row.blob_sha256, ver.model_name, ver.model_version, ver.explanation, frames)


def unavailable_reason(explanation: dict[str, Any] | None, version: str) -> str | None:
    """Returns why an item has no stored map (None when it has one)."""
    if explanation and explanation.get("cam"):
        return None
    return NO_MAP.format(version=version) + "."


def torch_installed() -> bool:
    """Returns whether torch can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def on_demand_versions(model_name: str, versions: list[str]) -> set[str]:
    """Returns the versions whose map-less verdicts get an on-demand heatmap (torch, checkpoint)."""
    if not torch_installed():
        return set()
    root = Path(state().settings.model_repository) / model_name
    return {v for v in versions if (root / v / "checkpoint.pt").is_file()}


def _autograd(item: _Item, submission_id: str, data: bytes) -> bytes | None:
    """Returns the on-demand heatmap of an older verdict when torch is installed, else None."""
    try:
        from training.gradcam import HeatmapUnavailable, cached_overlay
    except ImportError:
        return None
    settings = state().settings
    try:
        return cached_overlay(
            cache_dir=Path(settings.data_dir) / "gradcam",
            submission_id=submission_id,
            version=item.version,
            data=data,
            checkpoint=Path(settings.model_repository)
            / item.model_name
            / item.version
            / "checkpoint.pt",
            limits=ImageLimits.from_settings(settings),
        )
    except HeatmapUnavailable as exc:
        logger.info("no on-demand heatmap for %s: %s", submission_id, exc)
        return None


def item_overlay(submission_id: str) -> Overlay | None:
    """Returns the image item's overlay or a placard; None when there is no such scored item."""
    item = _load(submission_id)
    if item is None:
        return None
    if not item.sha:
        return Overlay(placard("No stored media for this item: nothing to draw the map on."), False)
    try:
        data = state().blobs.get(item.sha)
    except BlobNotFound:
        return Overlay(placard("The media of this item is gone from the blob store."), False)
    reason = unavailable_reason(item.explanation, item.version)
    if reason is None:
        assert item.explanation is not None
        try:
            picture, _fmt = decode_image(data, ImageLimits.from_settings(state().settings))
            return Overlay(overlay(picture, item.explanation["cam"]), True)
        except (MediaRejected, ValueError) as exc:
            return Overlay(placard(f"The stored map cannot be drawn: {_words(exc)}"), False)
    heat = _autograd(item, submission_id, data)
    return Overlay(heat, True) if heat is not None else Overlay(placard(reason), False)


def frame_overlay(submission_id: str, index: int, frame_png: bytes) -> Overlay:
    """Returns a video frame's overlay from the stored per-frame map, or a placard."""
    item = _load(submission_id)
    frames = ((item.explanation or {}).get("frames") or []) if item else []
    if item is None or not 0 <= index < len(frames) or not frames[index].get("cam"):
        version = item.version if item else "?"
        heat = _autograd(item, f"{submission_id}-frame{index}", frame_png) if item else None
        if heat is not None:
            return Overlay(heat, True)
        reason = f"No Grad-CAM map is stored for this frame (model version {version})."
        return Overlay(placard(reason), False)
    try:
        picture = Image.open(io.BytesIO(frame_png))
        return Overlay(overlay(picture, frames[index]["cam"]), True)
    except (OSError, ValueError) as exc:
        return Overlay(placard(f"The stored map cannot be drawn: {_words(exc)}"), False)


def _words(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    return str(detail or exc)[:200]
