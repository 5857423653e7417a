"""JPEG draft decoding: libjpeg's DCT-domain downscaling before the resize, and its switch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from moderation.preprocess import ImageLimits, load_image
from moderation.settings import load_settings
from tests.fixtures.media import encode, halves

DRAFT = ImageLimits()
FULL = ImageLimits(jpeg_draft=False)


def _photo(size: tuple[int, int] = (1280, 800), seed: int = 0) -> Image.Image:
    """Returns a smooth, photo-like RGB image (gradients plus mild noise)."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    array = base + rng.normal(0, 8, base.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def test_draft_is_on_by_default_and_follows_the_setting() -> None:
    assert ImageLimits().jpeg_draft is True
    assert ImageLimits.from_settings(load_settings({})).jpeg_draft is True
    assert ImageLimits.from_settings(load_settings({"DFMOD_JPEG_DRAFT": "0"})).jpeg_draft is False


def test_large_jpeg_draft_is_close_to_the_full_decode_but_really_differs() -> None:
    data = encode(_photo(), "JPEG", quality=90)
    drafted, full = load_image(data, DRAFT), load_image(data, FULL)
    assert drafted.shape == full.shape == (224, 224, 3)
    assert drafted.dtype == np.uint8 and drafted.flags["C_CONTIGUOUS"]
    diff = np.abs(drafted.astype(np.int16) - full.astype(np.int16))
    assert diff.mean() < 3.0, diff.mean()
    assert diff.max() > 0  # the draft path ran: a 1280x800 JPEG decodes at 1/2 scale


def test_small_jpeg_and_png_are_unchanged_by_the_setting() -> None:
    small = encode(_photo((300, 200)), "JPEG", quality=90)  # under 2x224: no scale applies
    np.testing.assert_array_equal(load_image(small, DRAFT), load_image(small, FULL))
    png = encode(_photo((1000, 700)), "PNG")
    np.testing.assert_array_equal(load_image(png, DRAFT), load_image(png, FULL))


def test_draft_keeps_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180: red (left) ends up on the right
    data = encode(halves((1600, 1000)), "JPEG", quality=95, exif=exif)
    array = load_image(data, DRAFT).astype(int)
    assert array[112, 20, 2] > 200 and array[112, 20, 0] < 60  # blue on the left
    assert array[112, 200, 0] > 200 and array[112, 200, 2] < 60  # red on the right


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_draft_converts_other_jpeg_modes_to_rgb(mode: str) -> None:
    data = encode(_photo((1200, 900)).convert(mode), "JPEG", quality=90)
    drafted, full = load_image(data, DRAFT), load_image(data, FULL)
    assert drafted.shape == (224, 224, 3)
    assert np.abs(drafted.astype(np.int16) - full.astype(np.int16)).mean() < 3.0
