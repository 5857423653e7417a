"""The only place that turns media bytes into the model's input array.

The worker, ``dfmod scan`` and training's evaluation transform all call :func:`load_image`, so a
served score and an evaluated score see identical pixels. Every refusal is a :class:`MediaRejected`
with a machine-readable ``reason`` the API and the worker report as is.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, features

from moderation.contract import INPUT_SIZE
from moderation.redact import public_detail

if TYPE_CHECKING:
    from moderation.settings import Settings

logger = logging.getLogger(__name__)

# Reason codes shared with the submission lifecycle (failed.reason).
UNSUPPORTED_MEDIA = "unsupported_media"
UNREADABLE_MEDIA = "unreadable_media"
TOO_LARGE = "too_large"
REASONS = (UNSUPPORTED_MEDIA, UNREADABLE_MEDIA, TOO_LARGE)
EXIF_ORIENTATION = 0x0112  # the EXIF Orientation tag (1 = upright)
TURNING_ORIENTATIONS = (5, 6, 7, 8)  # the orientations that swap width and height

# Magic numbers -> Pillow format name. Sniffed from the bytes, never from a name or content type.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
_OTHER_KINDS: tuple[tuple[bytes, str], ...] = (
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"<!doctype html", "HTML"),
    (b"<html", "HTML"),
    (b"%pdf", "PDF"),
    (b"pk\x03\x04", "ZIP"),
    (b"\x00\x00\x00", "video or other binary"),
)
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "HEIF", "AVIF")
# ISO base media file brands of still images (the ``ftyp`` box): what phones upload by default.
# HEIF/HEIC is read by pillow-heif, AVIF by Pillow itself; neither is video (moderation.video).
AVIF_BRANDS = (b"avif", b"avis")
HEIF_BRANDS = (
    b"heic",
    b"heix",
    b"heim",
    b"heis",
    b"hevc",
    b"hevx",
    b"hevm",
    b"hevs",
    b"mif1",
    b"msf1",
)
IMAGE_BRANDS = AVIF_BRANDS + HEIF_BRANDS


class MediaRejected(ValueError):
    """Unscorable media: ``reason`` is a stable code, ``detail`` says what was expected."""

    def __init__(self, reason: str, detail: str) -> None:
        detail = public_detail(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    """What :func:`load_image` accepts; built from settings by the processes that call it."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = DEFAULT_FORMATS
    size: int = INPUT_SIZE
    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (never below ``size``) before the resize.
    jpeg_draft: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """Returns the limits configured in a :class:`moderation.settings.Settings`."""
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            formats=settings.image_formats,
            jpeg_draft=bool(settings.jpeg_draft),
        )


DEFAULT_LIMITS = ImageLimits()


def _brands(data: bytes) -> list[bytes]:
    """Returns the major and compatible brands of an ``ftyp`` box at the start (or [])."""
    if data[4:8] != b"ftyp":
        return []
    size = int.from_bytes(data[:4], "big")
    end = min(max(size, 16), len(data), 256)
    return [data[8:12]] + [data[i : i + 4] for i in range(16, end - 3, 4)]


def sniff_still_brand(data: bytes) -> str | None:
    """Returns "AVIF" or "HEIF" for an ISO media file whose major brand is a still image's."""
    brands = _brands(data)
    if not brands or brands[0] not in IMAGE_BRANDS:
        return None
    return "AVIF" if any(b in AVIF_BRANDS for b in brands) else "HEIF"


def sniff_format(data: bytes) -> str | None:
    """Returns the image format the bytes really are (Pillow's name), or None."""
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return sniff_still_brand(data)


@functools.cache
def _register_heif() -> bool:
    """Registers pillow-heif's HEIF opener with Pillow once; returns whether it is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _describe_unknown(data: bytes) -> str:
    """Says what bytes in no accepted format look like, for the rejection's detail."""
    if data[4:8] == b"ftyp":  # before the generic binary check: its size field starts with zeros
        return "the bytes look like an MP4/MOV container"
    head = data[:64].lstrip().lower()
    for magic, label in _OTHER_KINDS:
        if head.startswith(magic):
            return f"the bytes look like {label}"
    return "the bytes are in no format this service recognises"


def _check_bytes(data: bytes, limits: ImageLimits) -> str:
    if not data:
        raise MediaRejected(UNREADABLE_MEDIA, "the file is empty; expected an image")
    if len(data) > limits.max_bytes:
        raise MediaRejected(
            TOO_LARGE, f"the file has {len(data)} bytes; expected at most {limits.max_bytes}"
        )
    fmt = sniff_format(data)
    allowed = ", ".join(limits.formats)
    if fmt is None:
        raise MediaRejected(UNSUPPORTED_MEDIA, f"{_describe_unknown(data)}; expected {allowed}")
    if fmt not in limits.formats:
        raise MediaRejected(UNSUPPORTED_MEDIA, f"{fmt} is not accepted; expected {allowed}")
    return fmt


def _open(data: bytes, fmt: str, limits: ImageLimits) -> Image.Image:
    if fmt == "HEIF" and not _register_heif():
        raise MediaRejected(UNSUPPORTED_MEDIA, "HEIF/HEIC decoding (pillow-heif) is not installed")
    if fmt == "AVIF" and not features.check("avif"):
        raise MediaRejected(UNSUPPORTED_MEDIA, "this Pillow build cannot decode AVIF")
    try:
        # Opening reads the header only. Pillow's warning threshold is not ours: the pixel limit
        # below decides; Pillow's own hard error (2 x MAX_IMAGE_PIXELS) stays as a backstop.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise bomb_refused(exc, f"{fmt} image") from exc
    except (OSError, SyntaxError, ValueError, RuntimeError) as exc:  # Runtime: libavif, libheif
        raise MediaRejected(UNREADABLE_MEDIA, f"cannot parse the {fmt} header: {exc}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise MediaRejected(UNREADABLE_MEDIA, f"the image is {width}x{height}; expected pixels")
    if width * height > limits.max_pixels:
        raise MediaRejected(
            TOO_LARGE,
            f"the image is {width}x{height} = {width * height} pixels; "
            f"expected at most {limits.max_pixels}",
        )
    return image


def _draft(image: Image.Image, fmt: str, limits: ImageLimits) -> Image.Image:
    """Returns the image set to decode at the smallest DCT scale still >= ``size`` on both sides.

    Only JPEG supports this (libjpeg scales in the DCT domain, so a ~1 MP photo decodes several
    times faster); every other format, and a disabled setting, decodes at full size.
    """
    if fmt == "JPEG" and limits.jpeg_draft:
        try:
            image.draft("RGB", (limits.size, limits.size))
        except (OSError, ValueError) as exc:
            logger.debug("JPEG draft mode refused, decoding at full size: %s", exc)
    return image


def bomb_refused(exc: BaseException, what: str) -> MediaRejected:
    """Returns the ``too_large`` refusal of a picture whose decoding would take more memory than
    a worker has (Pillow's own bomb check, or the allocation failing)."""
    if isinstance(exc, MemoryError):
        return MediaRejected(TOO_LARGE, f"decoding the {what} needs more memory than allowed")
    return MediaRejected(TOO_LARGE, f"the {what} is a decompression bomb: {exc}")


def _decode_first_frame(image: Image.Image, fmt: str) -> tuple[Image.Image, int]:
    """Returns the decoded first frame turned upright, and its EXIF orientation (1 = upright)."""
    try:
        image.seek(0)
        image.load()
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise bomb_refused(exc, f"{fmt} image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        detail = f"the {fmt} data is truncated or corrupt: {exc}"
        raise MediaRejected(UNREADABLE_MEDIA, detail) from exc
    try:
        # Read after load(): a PNG's eXIf chunk may follow its pixels, and Pillow's getexif()
        # decodes the whole PNG to find it when called before.
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        if not isinstance(orientation, int) or orientation == 1:
            return image, 1  # exif_transpose would copy the whole image to turn nothing
        return ImageOps.exif_transpose(image), orientation
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        logger.debug("ignoring unreadable EXIF orientation", exc_info=True)
        return image, 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Returns the image in RGB: alpha composited on white, 16-bit and float scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.int64)
        top = 65535 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        arr8 = np.clip(arr * 255 // max(top, 1), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        scaled = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Returns the model input for image bytes: uint8 [size, size, 3] RGB, C-contiguous.

    Raises :class:`MediaRejected` for anything that is not an accepted, intact, bounded image.
    """
    image, fmt = decode_image(data, limits)
    return image_to_input(image, size=limits.size, what=f"{fmt} image")


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[Image.Image, str]:
    """Returns the decoded, upright first frame of image bytes and its format (first half of
    :func:`load_image`; :func:`image_to_input` is the second). Raises :class:`MediaRejected`."""
    decoded = decode_upright(data, limits)
    return decoded.image, decoded.format


@dataclass(frozen=True)
class Decoded:
    """An upright first frame, its format, and the full picture's upright (width, height): a
    JPEG's frame may be decoded at 1/2 to 1/8 scale (``ImageLimits.jpeg_draft``)."""

    image: Image.Image
    format: str
    size: tuple[int, int]


def decode_upright(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> Decoded:
    """:func:`decode_image`, with the full picture's upright size (for regions in the
    uploaded picture's own pixels) read while decoding, not from a second parse."""
    fmt = _check_bytes(data, limits)
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        opened = _open(data, fmt, limits)
        width, height = opened.size
        image, orientation = _decode_first_frame(_draft(opened, fmt, limits), fmt)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    turned = orientation in TURNING_ORIENTATIONS
    return Decoded(image, fmt, (height, width) if turned else (width, height))


RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def image_to_input(
    image: Image.Image, *, size: int = INPUT_SIZE, what: str = "image", resize: str = "bilinear"
) -> np.ndarray:
    """Returns a decoded picture as the model input: uint8 [size, size, 3] RGB, C-contiguous.

    The one conversion shared by still images (:func:`load_image`) and video frames
    (:mod:`moderation.video`), so both are scored on identically prepared pixels.
    """
    try:
        rgb = to_rgb(image)
        resized = rgb.resize((size, size), RESAMPLING[resize])
    except MemoryError as exc:
        raise bomb_refused(exc, what) from exc
    except (OSError, ValueError) as exc:
        detail = f"cannot convert the {what} (mode {image.mode}) to RGB: {exc}"
        raise MediaRejected(UNREADABLE_MEDIA, detail) from exc
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8))


def load_image_file(path: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Returns the model input for an image file (see :func:`load_image`)."""
    with open(path, "rb") as handle:
        return load_image(handle.read(), limits)
