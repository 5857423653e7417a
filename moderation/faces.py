"""Optional face stage for video frames: the largest faces, cropped with a margin.

OpenCV's Haar cascade (weights inside the wheel, nothing downloads) finds them; crops go through
:func:`moderation.preprocess.image_to_input` like every other input.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from moderation.contract import INPUT_SIZE
from moderation.preprocess import image_to_input

logger = logging.getLogger(__name__)

CASCADE = "haarcascade_frontalface_default.xml"
MARGIN = 0.25  # of the face box, on each side
DETECT_WIDTH = 640  # detection runs on a copy at most this wide
MIN_FACE = 24  # pixels, in the detection copy


@dataclass(frozen=True)
class Crop:
    """One face crop: its box (x, y, width, height) in the frame and the model input."""

    box: tuple[int, int, int, int]
    pixels: np.ndarray


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    import cv2
    import cv2.data

    folder = str(cv2.data.haarcascades)
    detector = cv2.CascadeClassifier(folder + CASCADE)
    if detector.empty():
        raise RuntimeError(f"cannot load {CASCADE} from {folder}")
    return detector


def largest_faces(image: Image.Image, *, count: int) -> list[tuple[int, int, int, int]]:
    """Returns up to ``count`` face boxes (x, y, w, h) in image pixels, largest first."""
    if count < 1:
        return []
    scale = min(1.0, DETECT_WIDTH / max(1, image.width))
    small = image.convert("L")
    if scale < 1.0:
        small = small.resize((round(image.width * scale), round(image.height * scale)))
    found = _detector().detectMultiScale(
        np.asarray(small), scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE)
    )
    boxes = [tuple(round(float(v) / scale) for v in box) for box in found]
    boxes.sort(key=lambda b: (-b[2] * b[3], b[0], b[1]))
    return [(b[0], b[1], b[2], b[3]) for b in boxes[:count]]


def face_crops(image: Image.Image, *, count: int, size: int = INPUT_SIZE) -> tuple[Crop, ...]:
    """Returns model inputs for the ``count`` largest faces, each box widened by ``MARGIN``."""
    crops = []
    for x, y, w, h in largest_faces(image, count=count):
        dx, dy = round(w * MARGIN), round(h * MARGIN)
        left, top = max(0, x - dx), max(0, y - dy)
        right, bottom = min(image.width, x + w + dx), min(image.height, y + h + dy)
        region = image.crop((left, top, right, bottom))
        crops.append(Crop((x, y, w, h), image_to_input(region, size=size, what="face crop")))
    return tuple(crops)
