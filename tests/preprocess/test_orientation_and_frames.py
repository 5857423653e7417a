"""EXIF orientation is applied; animated files contribute their first frame only."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from moderation.preprocess import decode_upright, load_image
from tests.fixtures.media import encode, halves

ORIENTATION = 0x0112


def _with_orientation(image: Image.Image, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(image, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


def _dominant(pixel: np.ndarray) -> str:
    return "red" if pixel[0] > 200 and pixel[2] < 60 else "blue" if pixel[2] > 200 else "other"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_rotation_is_applied(fmt: str) -> None:
    # Stored: red left, blue right. Orientation 6 = rotate 90 degrees clockwise to display,
    # so the displayed image has red on top and blue at the bottom.
    array = load_image(_with_orientation(halves((64, 32)), 6, fmt))
    assert _dominant(array[20, 112]) == "red"
    assert _dominant(array[200, 112]) == "blue"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize(("orientation", "upright"), [(1, (2400, 800)), (6, (800, 2400))])
def test_decoded_size_is_the_full_picture_upright(
    fmt: str, orientation: int, upright: tuple[int, int]
) -> None:
    # Regions are drawn in the uploaded picture's own pixels: the size is the full picture's,
    # turned like its pixels, even when a JPEG is decoded at a reduced scale.
    decoded = decode_upright(_with_orientation(halves((2400, 800)), orientation, fmt))
    assert decoded.size == upright and decoded.format == fmt
    if fmt == "JPEG":
        assert decoded.image.size[0] * decoded.image.size[1] < 2400 * 800  # drafted
    portrait = decoded.image.size[0] < decoded.image.size[1]
    assert portrait == (orientation == 6)


def test_without_exif_nothing_rotates() -> None:
    array = load_image(encode(halves((64, 32)), "JPEG", quality=95))
    assert _dominant(array[112, 20]) == "red" and _dominant(array[112, 200]) == "blue"


def test_mirrored_orientation_is_applied() -> None:
    array = load_image(_with_orientation(halves((64, 32)), 2, "PNG"))  # 2 = mirror horizontally
    assert _dominant(array[112, 20]) == "blue" and _dominant(array[112, 200]) == "red"


def _frames() -> list[Image.Image]:
    return [
        Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))
    ]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_files_give_their_first_frame(fmt: str) -> None:
    first, *rest = _frames()
    options: dict[str, object] = {"save_all": True, "append_images": rest, "duration": 100}
    if fmt == "WEBP":
        options["lossless"] = True
    data = encode(first, fmt, **options)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    array = load_image(data)
    assert _dominant(array[112, 112]) == "red"
