"""The verdict's explanation: the served Grad-CAM map, its top regions, and overlays without torch.

Regions are boxes in the original image's (EXIF-oriented) pixels with their share of the map's mass;
overlays are drawn from the stored map with numpy and Pillow (docs/design.md, "Explanations").
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from moderation.contract import CAM_SHAPE

logger = logging.getLogger(__name__)

REGION_THRESHOLD = 0.5  # cells at or above this fraction of the peak form regions
MAX_REGIONS = 3
OVERLAY_ALPHA = 0.45


def colorize(heat: np.ndarray) -> np.ndarray:
    """Returns uint8 RGB of a blue-to-red ramp for values in [0, 1]."""
    red = np.clip(1.5 - np.abs(4 * heat - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * heat - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * heat - 1), 0, 1)
    return (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def check_cam(cam: Any) -> np.ndarray:
    """Returns a stored or served map as float32 [7, 7] in [0, 1]; raises ValueError otherwise."""
    array = np.asarray(cam, dtype=np.float32)
    if array.shape != CAM_SHAPE or not np.isfinite(array).all():
        raise ValueError(f"expected a finite Grad-CAM map of shape {list(CAM_SHAPE)}")
    return np.clip(array, 0.0, 1.0)


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """Returns the 4-connected groups of True cells, each as a list of (row, col)."""
    seen = np.zeros_like(mask, dtype=bool)
    groups = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, group = [start], []
        seen[start] = True
        while stack:
            r, c = stack.pop()
            group.append((int(r), int(c)))
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                inside = 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1]
                if inside and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    stack.append((nr, nc))
        groups.append(group)
    return groups


def regions(cam: np.ndarray, *, width: int, height: int) -> list[dict[str, Any]]:
    """Returns up to three regions {box [x0, y0, x1, y1], share}, largest share first."""
    heat = check_cam(cam)
    total = float(heat.sum())
    if total <= 0:
        return []
    rows, cols = heat.shape
    found: list[dict[str, Any]] = []
    for group in _components(heat >= REGION_THRESHOLD * float(heat.max())):
        r0, r1 = min(r for r, _ in group), max(r for r, _ in group) + 1
        c0, c1 = min(c for _, c in group), max(c for _, c in group) + 1
        box = [
            round(c0 * width / cols),
            round(r0 * height / rows),
            round(c1 * width / cols),
            round(r1 * height / rows),
        ]
        share = sum(float(heat[r, c]) for r, c in group) / total
        found.append({"box": box, "share": round(share, 4)})
    found.sort(key=lambda region: -region["share"])
    return found[:MAX_REGIONS]


def explain(cam: np.ndarray, *, width: int, height: int) -> dict[str, Any]:
    """Returns the stored explanation of one picture: the map (4 decimals) and its regions."""
    heat = check_cam(cam)
    return {
        "cam": np.round(heat.astype(np.float64), 4).tolist(),
        "regions": regions(heat, width=width, height=height),
    }


def video_explain(
    frames: list[tuple[float, tuple[int, int]]], cams: np.ndarray, *, top: int
) -> dict[str, Any]:
    """Returns a video's explanation: the most suspicious frame's map and regions at the top,
    and every scored frame's under ``frames`` ({timestamp_s, cam, regions}, in frame order)."""
    entries = []
    for (timestamp, (width, height)), cam in zip(frames, cams, strict=False):
        entries.append({"timestamp_s": timestamp, **explain(cam, width=width, height=height)})
    return {"cam": entries[top]["cam"], "regions": entries[top]["regions"], "frames": entries}


def overlay(picture: Image.Image, cam: Any, *, max_side: int = 640) -> bytes:
    """Returns a PNG of the picture (at most ``max_side`` px) with the map blended over it and
    its regions outlined in white (the largest share with the thickest line)."""
    rgb = ImageOps.exif_transpose(picture).convert("RGB")
    rgb.thumbnail((max_side, max_side))
    heat_map = check_cam(cam)
    small = Image.fromarray(heat_map, mode="F")
    heat = np.asarray(small.resize(rgb.size, Image.Resampling.BILINEAR), dtype=np.float32)
    color = colorize(np.clip(heat, 0.0, 1.0))
    blended = (1 - OVERLAY_ALPHA) * np.asarray(rgb, dtype=np.float32) + OVERLAY_ALPHA * color
    result = Image.fromarray(blended.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(result)
    width, height = result.size
    for rank, region in enumerate(regions(heat_map, width=width, height=height)):
        x0, y0, x1, y1 = region["box"]
        line = max(1, min(width, height) // (80 * (rank + 1)))
        box = (x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))
        draw.rectangle(box, outline=(255, 255, 255), width=line)
    return _png(result)


def placard(text: str, *, size: tuple[int, int] = (320, 120)) -> bytes:
    """Returns a PNG that says in words why no overlay can be shown (never a broken image)."""
    image = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(image)
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > 48:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    for index, content in enumerate(lines[:8]):
        draw.text((8, 8 + 13 * index), content, fill=(60, 60, 60))
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
