"""A deterministic synthetic real/fake image set for demos and tests (no downloads).

"Real" images are face-like scenes through one camera pipeline; "fake" ones add the traces of a
face swap. Every image is a pure function of (seed, class, index).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

REAL, FAKE = "real", "fake"
_SKIN = np.array([[241, 194, 167], [224, 172, 138], [198, 134, 96], [161, 102, 64], [110, 68, 42]])


@dataclass(frozen=True)
class Face:
    """Where the face ellipse sits in a scene, in pixels."""

    cx: float
    cy: float
    rx: float
    ry: float

    def box(self, pad: float = 1.0) -> tuple[int, int, int, int]:
        """Returns the (left, top, right, bottom) box around the ellipse, scaled by ``pad``."""
        return (
            int(self.cx - self.rx * pad),
            int(self.cy - self.ry * pad),
            int(self.cx + self.rx * pad),
            int(self.cy + self.ry * pad),
        )


def _low_freq_noise(rng: np.random.Generator, size: int, cells: int, amp: float) -> np.ndarray:
    grid = rng.normal(0.0, amp, (cells, cells, 3)).astype(np.float32)
    small = Image.fromarray(np.clip(grid * 40 + 128, 0, 255).astype(np.uint8))
    big = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return (big - 128) / 40


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    base = c0 + (c1 - c0) * ramp[..., None] + _low_freq_noise(rng, size, 6, 1.0) * 18
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):  # scene clutter
        x0, y0 = rng.uniform(0, size, 2)
        w, h = rng.uniform(size * 0.05, size * 0.35, 2)
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=colour)
    return image


def _draw_face(image: Image.Image, rng: np.random.Generator) -> Face:
    size = image.width
    face = Face(
        cx=size * rng.uniform(0.38, 0.62),
        cy=size * rng.uniform(0.42, 0.6),
        rx=size * rng.uniform(0.16, 0.22),
        ry=size * rng.uniform(0.22, 0.29),
    )
    skin = _SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3)
    hair = rng.uniform(10, 90, 3) * rng.uniform(0.5, 1.5)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = face.box()
    draw.ellipse((left - 6, top - face.ry * 0.25, right + 6, bottom - face.ry), fill=_rgb(hair))
    draw.ellipse((left, top, right, bottom), fill=_rgb(skin))
    for side in (-1, 1):
        ex, ey = face.cx + side * face.rx * 0.42, face.cy - face.ry * 0.18
        er = face.rx * rng.uniform(0.1, 0.15)
        draw.ellipse((ex - er * 1.5, ey - er, ex + er * 1.5, ey + er), fill=(245, 245, 240))
        draw.ellipse((ex - er * 0.7, ey - er * 0.7, ex + er * 0.7, ey + er * 0.7), fill=_rgb(hair))
    mouth_w, mouth_y = face.rx * rng.uniform(0.35, 0.55), face.cy + face.ry * 0.45
    draw.ellipse(
        (face.cx - mouth_w, mouth_y - 6, face.cx + mouth_w, mouth_y + 6), fill=(150, 50, 60)
    )
    draw.line((face.cx, face.cy - 4, face.cx - 5, face.cy + face.ry * 0.2), fill=_rgb(skin * 0.8))
    _shade(image, face, rng)
    return face


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(v, 0, 255)) for v in values)
    return r, g, b


def _shade(image: Image.Image, face: Face, rng: np.random.Generator) -> None:
    size = image.width
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + 0.18 * (
        np.cos(angle) * (xx - face.cx) / face.rx + np.sin(angle) * (yy - face.cy) / face.ry
    )
    arr = np.asarray(image, dtype=np.float32) * np.clip(light, 0.6, 1.4)[..., None]
    texture = _low_freq_noise(rng, size, 40, 1.0) * 6
    image.paste(Image.fromarray(np.clip(arr + texture, 0, 255).astype(np.uint8)))


def _camera(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    blurred = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.0))))
    noise = rng.normal(0, rng.uniform(1.5, 4.0), (image.height, image.width, 3))
    return Image.fromarray(
        np.clip(np.asarray(blurred, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    )


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def _scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, Face]:
    image = _background(rng, size)
    return image, _draw_face(image, rng)


def make_real(rng: np.random.Generator, size: int) -> bytes:
    """Returns JPEG bytes of one camera-like scene, compressed once."""
    image, _ = _scene(rng, size)
    return _jpeg(_camera(image, rng), int(rng.integers(82, 96)))


def _feather_mask(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    mask = Image.new("L", size, 0)
    inset = rng.uniform(0.08, 0.16)
    w, h = size
    ImageDraw.Draw(mask).ellipse((w * inset, h * inset, w * (1 - inset), h * (1 - inset)), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(w, h) * rng.uniform(0.04, 0.08)))


def _donor_patch(
    rng: np.random.Generator, size: int, box: tuple[int, int, int, int]
) -> Image.Image:
    donor, face = _scene(rng, size)
    patch = _camera(donor, rng).crop(face.box(pad=1.15))
    w, h = box[2] - box[0], box[3] - box[1]
    factor = rng.uniform(0.25, 0.5)  # generator output is low-res and upsampled into place
    small = patch.resize(
        (max(8, int(w * factor)), max(8, int(h * factor))), Image.Resampling.BILINEAR
    )
    method = [Image.Resampling.BILINEAR, Image.Resampling.NEAREST, Image.Resampling.BICUBIC]
    patch = small.resize((w, h), method[int(rng.integers(3))])
    cast = 1 + rng.choice([-1, 1], 3) * rng.uniform(0.08, 0.18, 3)
    patch = Image.fromarray(np.clip(np.asarray(patch, np.float32) * cast, 0, 255).astype(np.uint8))
    if rng.random() < 0.75:
        return patch.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 2.5))))
    return patch.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(120, 220))))


def make_fake(rng: np.random.Generator, size: int) -> bytes:
    """Returns JPEG bytes of a scene with a swapped-in face and its traces, compressed twice."""
    image, face = _scene(rng, size)
    image = _camera(image, rng)
    box = face.box(pad=1.1)
    patch = _donor_patch(rng, size, box)
    image.paste(patch, box[:2], _feather_mask(patch.size, rng))
    first = Image.open(io.BytesIO(_jpeg(image, int(rng.integers(40, 70)))))
    return _jpeg(first.convert("RGB"), int(rng.integers(82, 96)))


def generate(
    out_dir: Path, *, per_class: int = 300, seed: int = 0, size: int = 256, manifest: bool = True
) -> dict[str, int]:
    """Writes ``real/`` and ``fake/`` JPEGs (and ``manifest.csv``) and returns counts per class."""
    out_dir = Path(out_dir)
    rows: list[tuple[str, int]] = []
    for label, (name, make) in enumerate(((REAL, make_real), (FAKE, make_fake))):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, label, index])
            side = int(size + rng.integers(-size // 8, size // 8 + 1))
            path = folder / f"{name}_{index:05d}.jpg"
            path.write_bytes(make(rng, side))
            rows.append((f"{name}/{path.name}", label))
    if manifest:
        with open(out_dir / "manifest.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
    logger.info("wrote %d real and %d fake demo images to %s", per_class, per_class, out_dir)
    return {REAL: per_class, FAKE: per_class}
