"""load_image refuses what it must, each time with a typed reason the API and worker report."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from moderation.preprocess import (
    REASONS,
    TOO_LARGE,
    UNREADABLE_MEDIA,
    UNSUPPORTED_MEDIA,
    ImageLimits,
    MediaRejected,
    load_image,
)
from moderation.settings import load_settings
from tests.fixtures.media import encode


def _rejected(data: bytes, limits: ImageLimits | None = None) -> MediaRejected:
    with pytest.raises(MediaRejected) as caught:
        load_image(data, limits) if limits else load_image(data)
    assert caught.value.reason in REASONS
    assert caught.value.detail and str(caught.value).startswith(caught.value.reason)
    return caught.value


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"PK\x03\x04" + b"\x00" * 40, "ZIP"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40, "MP4"),
        (b"#!/bin/sh\nrm -rf /\n", "in no format this service recognises"),
    ],
)
def test_non_image_bytes_are_unsupported(data: bytes, looks_like: str) -> None:
    error = _rejected(data)
    assert error.reason == UNSUPPORTED_MEDIA
    assert looks_like in error.detail and "expected JPEG, PNG" in error.detail


def test_empty_file_is_unreadable() -> None:
    assert _rejected(b"").reason == UNREADABLE_MEDIA


def test_file_name_or_content_type_never_matter(noise: Image.Image) -> None:
    # A real TIFF is refused by default whatever it claims to be; sniffing reads the bytes.
    error = _rejected(encode(noise, "TIFF"))
    assert error.reason == UNSUPPORTED_MEDIA and "TIFF is not accepted" in error.detail


def test_allowed_formats_come_from_settings(noise: Image.Image) -> None:
    settings = load_settings({"DFMOD_ALLOWED_IMAGE_FORMATS": "png, tiff"})
    limits = ImageLimits.from_settings(settings)
    assert limits.formats == ("PNG", "TIFF")
    assert load_image(encode(noise, "TIFF"), limits).shape == (224, 224, 3)
    assert _rejected(encode(noise, "JPEG"), limits).reason == UNSUPPORTED_MEDIA


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP"])
@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_files_are_unreadable(noise: Image.Image, fmt: str, keep: float) -> None:
    data = encode(noise, fmt)
    assert _rejected(data[: int(len(data) * keep)]).reason == UNREADABLE_MEDIA


def test_corrupt_body_behind_a_valid_signature_is_unreadable() -> None:
    assert _rejected(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20).reason == UNREADABLE_MEDIA
    assert _rejected(b"\xff\xd8\xff" + b"\x00" * 100).reason == UNREADABLE_MEDIA


def test_byte_limit(noise: Image.Image) -> None:
    data = encode(noise, "PNG")
    error = _rejected(data, ImageLimits(max_bytes=len(data) - 1))
    assert error.reason == TOO_LARGE and f"expected at most {len(data) - 1}" in error.detail
    assert load_image(data, ImageLimits(max_bytes=len(data))).shape == (224, 224, 3)


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 4000 x 4000 of zeros: 16 Mpx that compress to a few kilobytes.
    data = encode(Image.new("L", (4000, 4000)), "PNG", optimize=True)
    assert len(data) < 100_000
    error = _rejected(data, ImageLimits(max_pixels=10_000_000))
    assert error.reason == TOO_LARGE and "4000x4000" in error.detail


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [20_000, 100_000])
def test_decompression_bomb_header_is_refused(side: int) -> None:
    # A tiny file claiming 400 Mpx (past Pillow's own hard limit) or 10 Gpx.
    error = _rejected(_png_header_only(side, side))
    assert error.reason == TOO_LARGE


def test_bomb_is_refused_quickly() -> None:
    started = time.monotonic()
    _rejected(_png_header_only(60_000, 60_000))
    assert time.monotonic() - started < 1.0


def test_zero_sized_gif_is_unreadable() -> None:
    data = b"GIF89a" + struct.pack("<HH", 0, 0) + b"\x00\x00\x00" + b";"
    assert _rejected(data).reason == UNREADABLE_MEDIA


def test_rejection_carries_reason_and_detail() -> None:
    error = MediaRejected(TOO_LARGE, "expected at most 3 bytes")
    assert (error.reason, error.detail) == (TOO_LARGE, "expected at most 3 bytes")
    assert isinstance(error, ValueError)
    assert str(error) == "too_large: expected at most 3 bytes"


def test_limits_default_to_settings_defaults() -> None:
    limits = ImageLimits.from_settings(load_settings({}))
    assert limits == ImageLimits()
    assert np.dtype(np.uint8) == load_image(encode(Image.new("RGB", (3, 3)), "BMP")).dtype
