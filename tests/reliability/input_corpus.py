"""A generated corpus of bad, odd and hostile media for the input-robustness tests.

Nothing is stored in the repository: every file is built in memory from Pillow output and
hand-made headers, so the corpus is reproducible and can grow without binary fixtures. Each case
carries what a correct outcome is: ``"array"`` (must decode), a set of accepted refusal reasons,
or ``None`` (either an array or any known refusal is correct, e.g. a truncated file Pillow may
still decode in full).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image

from moderation.preprocess import TOO_LARGE, UNREADABLE_MEDIA, UNSUPPORTED_MEDIA
from tests.fixtures.media import encode

ARRAY = "array"
Expect = str | frozenset[str] | None


@dataclass(frozen=True)
class Case:
    """One corpus file: a stable id, its bytes and what a correct outcome is."""

    name: str
    data: bytes
    expect: Expect
    # What a client would claim (used by the API subset): filename and content type.
    filename: str = "upload.jpg"
    content_type: str = "image/jpeg"


def _gradient(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata(
        [(x * 4 % 256, y * 5 % 256, (x + y) % 256) for y in range(size[1]) for x in range(size[0])]
    )
    return image.convert(mode) if mode != "RGB" else image


def _frames(count: int = 4) -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (60 * i % 256, 40, 200 - 30 * i)) for i in range(count)]


def _palette_transparent() -> Image.Image:
    image = _gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    return image


def _exif_rotated(orientation: int, fmt: str = "JPEG") -> bytes:
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif.tobytes(), quality=90)


def valid_bases() -> dict[str, bytes]:
    """Returns decodable images in every mode and container the preprocessing must handle."""
    rgb = _gradient()
    frames = _frames()
    bases = {
        "jpeg_rgb": encode(rgb, "JPEG", quality=85),
        "jpeg_progressive": encode(rgb, "JPEG", progressive=True),
        "jpeg_gray": encode(rgb.convert("L"), "JPEG"),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "png_rgb": encode(rgb, "PNG"),
        "png_rgba": encode(rgb.convert("RGBA"), "PNG"),
        "png_la": encode(rgb.convert("LA"), "PNG"),
        "png_palette_transparent": encode(_palette_transparent(), "PNG"),
        "png_16bit": encode(Image.new("I;16", (40, 30), 40000), "PNG"),
        "png_1bit": encode(rgb.convert("1"), "PNG"),
        "png_optimized": encode(rgb, "PNG", optimize=True),
        "apng": encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "webp_lossy": encode(rgb, "WEBP", quality=70),
        "webp_lossless_rgba": encode(rgb.convert("RGBA"), "WEBP", lossless=True),
        "webp_animated": encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "gif_static": encode(rgb.convert("P"), "GIF"),
        "gif_transparent": encode(_palette_transparent(), "GIF", transparency=0),
        "gif_animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0),
        "bmp_rgb": encode(rgb, "BMP"),
        "bmp_palette": encode(rgb.convert("P"), "BMP"),
    }
    for orientation in range(1, 9):
        bases[f"jpeg_exif_orientation_{orientation}"] = _exif_rotated(orientation)
    bases.update(phone_bases())
    return bases


def phone_bases() -> dict[str, bytes]:
    """Returns HEIC (pillow-heif) and AVIF (Pillow) images, plain and with EXIF orientations."""
    from moderation.preprocess import _register_heif

    _register_heif()
    rgb = _gradient()
    bases = {
        "heic_rgb": encode(rgb, "HEIF", quality=80),
        "heic_rgba": encode(rgb.convert("RGBA"), "HEIF", quality=80),
        "avif_rgb": encode(rgb, "AVIF", quality=80),
        "avif_rgba": encode(rgb.convert("RGBA"), "AVIF", quality=80),
    }
    for orientation in (3, 6, 8):
        for fmt in ("HEIF", "AVIF"):
            name = f"{'heic' if fmt == 'HEIF' else 'avif'}_exif_orientation_{orientation}"
            bases[name] = _exif_rotated(orientation, fmt)
    return bases


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", header)
    body += _chunk(b"IDAT", idat or zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + body + _chunk(b"IEND", b"")


def _gif_declaring(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return screen + descriptor + b"\x02\x02\x44\x01\x00\x3b"


def _jpeg_declaring(width: int, height: int) -> bytes:
    valid = encode(Image.new("RGB", (16, 16), (10, 20, 30)), "JPEG")
    index = valid.index(b"\xff\xc0")
    return valid[: index + 5] + struct.pack(">HH", height, width) + valid[index + 9 :]


def _bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 12, 0, 0, 54) + info + b"\x00" * 12


def _webp_declaring(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    payload = b"WEBP" + vp8x
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def bombs() -> Iterator[Case]:
    """Yields tiny files that declare enormous dimensions."""
    refused = frozenset({TOO_LARGE, UNREADABLE_MEDIA})
    builders: dict[str, Callable[[int, int], bytes]] = {
        "png": _png_declaring,
        "gif": _gif_declaring,
        "jpeg": _jpeg_declaring,
        "bmp": _bmp_declaring,
        "webp": _webp_declaring,
    }
    sizes = [(65535, 65535), (50000, 1000), (1, 60_000_000 // 1), (16384, 16384)]
    for fmt, build in builders.items():
        for width, height in sizes:
            if fmt in ("gif", "jpeg") and max(width, height) > 65535:
                continue
            if fmt == "webp" and max(width, height) > 1 << 24:
                continue
            yield Case(f"bomb_{fmt}_{width}x{height}", build(width, height), refused)
    yield Case("bomb_png_zero_width", _png_declaring(0, 100), frozenset({UNREADABLE_MEDIA}))
    # A real zlib bomb: 2 MB of zeros compressed to ~2 KB behind a header of 1000x700 RGB.
    big = zlib.compress(b"\x00" * (1000 * 3 + 1) * 700, 9)
    yield Case("bomb_png_zlib_small_dims", _png_declaring(1000, 700, big), None)
    yield Case("bomb_png_zlib_huge_dims", _png_declaring(20000, 20000, big), refused)


FOREIGN = {
    "html": b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
    "html_upper": b"  <HTML><img src=x onerror=alert(1)></HTML>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
    "svg_xml": b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<svg>&x;</svg>",
    "js": b"function f(){ fetch('http://169.254.169.254/') }",
    "php": b"<?php system($_GET['c']); ?>",
    "shell": b"#!/bin/sh\nrm -rf /\n",
    "pdf": b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "zip": b"PK\x03\x04" + b"\x00" * 26,
    "mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
    "text": b"hello, this is not an image",
    "json": b'{"media_url": "http://127.0.0.1/"}',
    "nul_bytes": b"\x00" * 512,
    "ff_bytes": b"\xff" * 512,
    "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 57,
    "tiff": encode(_gradient(), "TIFF"),
    "ico": encode(_gradient(), "ICO"),
    "riff_wave": b"RIFF\x24\x00\x00\x00WAVEfmt ",
}
MAGIC_ONLY = {
    "jpeg": b"\xff\xd8\xff",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "bmp": b"BM",
    "webp": b"RIFF\x00\x00\x00\x00WEBP",
}


def foreign_and_empty() -> Iterator[Case]:
    """Yields empty files, bare magic numbers and non-images posing as images."""
    yield Case("zero_bytes", b"", frozenset({UNREADABLE_MEDIA}))
    yield Case("one_byte", b"\xff", frozenset({UNSUPPORTED_MEDIA}))
    for name, data in FOREIGN.items():
        # A broken video container is refused by the video path as unreadable (video enabled).
        reasons = {UNSUPPORTED_MEDIA, UNREADABLE_MEDIA} if name == "mp4" else {UNSUPPORTED_MEDIA}
        for claimed, ctype in (("x.jpg", "image/jpeg"), ("x.png", "image/png")):
            yield Case(
                f"foreign_{name}_as_{claimed}",
                data,
                frozenset(reasons),
                filename=claimed,
                content_type=ctype,
            )
    for name, magic in MAGIC_ONLY.items():
        yield Case(f"magic_only_{name}", magic, frozenset({UNREADABLE_MEDIA}))
        yield Case(
            f"magic_then_html_{name}", magic + FOREIGN["html"], frozenset({UNREADABLE_MEDIA})
        )


def polyglots(bases: dict[str, bytes]) -> Iterator[Case]:
    """Yields valid images with scripts, archives or HTML appended or embedded."""
    tails = {"html": FOREIGN["html"], "zip": FOREIGN["zip"] * 4, "php": FOREIGN["php"]}
    for base in ("jpeg_rgb", "png_rgb", "gif_static", "webp_lossy", "bmp_rgb"):
        for tail_name, tail in tails.items():
            yield Case(f"polyglot_{base}_plus_{tail_name}", bases[base] + tail, None)
    comment = encode(_gradient(), "JPEG", comment=FOREIGN["html"])
    yield Case("polyglot_jpeg_html_comment", comment, ARRAY)
    yield Case(
        "polyglot_html_then_png", FOREIGN["html"] + bases["png_rgb"], frozenset({UNSUPPORTED_MEDIA})
    )


def mislabelled(bases: dict[str, bytes]) -> Iterator[Case]:
    """Yields valid images under the wrong extension and content type (the bytes decide)."""
    claims = [
        ("evil.html", "text/html"),
        ("x.svg", "image/svg+xml"),
        ("noext", ""),
        ("x.png", "application/octet-stream"),
    ]
    for base in ("jpeg_rgb", "png_rgba", "gif_animated", "webp_lossy"):
        for filename, ctype in claims:
            yield Case(
                f"mislabelled_{base}_as_{filename}",
                bases[base],
                ARRAY,
                filename=filename,
                content_type=ctype,
            )


CUTS = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98)


def damaged(bases: dict[str, bytes]) -> Iterator[Case]:
    """Yields truncated and bit-flipped copies of every valid base."""
    for name, data in bases.items():
        for fraction in CUTS:
            yield Case(
                f"truncated_{name}_{int(fraction * 100)}pct",
                data[: int(len(data) * fraction)],
                None,
            )
        yield Case(f"truncated_{name}_minus1", data[:-1], None)
        for index, position in enumerate((12, 30, len(data) // 2, len(data) - 12)):
            flipped = bytearray(data)
            flipped[position % len(data)] ^= 0xA5
            yield Case(f"flipped_{name}_{index}", bytes(flipped), None)


def _gif_descriptors(data: bytes) -> list[int]:
    """Returns the offsets of a GIF's image descriptors (walking its blocks)."""

    def skip_sub_blocks(pos: int) -> int:
        while data[pos]:
            pos += data[pos] + 1
        return pos + 1

    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    found = []
    while data[pos] != 0x3B:
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif data[pos] == 0x2C:  # image descriptor, optional local table, LZW size, sub-blocks
            found.append(pos)
            local = data[pos + 9]
            pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)
        else:
            raise ValueError(f"unexpected GIF block 0x{data[pos]:02x} at {pos}")
    return found


def _gif_frame_declaring(width: int, height: int, frame: int = 1) -> bytes:
    """A valid 3-frame 10x10 GIF whose frame ``frame`` declares ``width`` x ``height``."""
    frames = [Image.new("RGB", (10, 10), (80 * i, 20, 30)) for i in range(3)]
    data = bytearray(
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    )
    at = _gif_descriptors(bytes(data))[frame]
    data[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def _mjpeg_mkv(frames: list[bytes]) -> bytes:
    """A Matroska file of MJPEG packets (each a JPEG of any size), 10 frames a second."""
    import fractions

    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        stream.time_base = fractions.Fraction(1, 10)
        for index, data in enumerate(frames):
            packet = av.Packet(data)
            packet.pts = packet.dts = index
            packet.time_base, packet.stream = stream.time_base, stream
            container.mux(packet)
    return out.getvalue()


def media_bombs() -> Iterator[Case]:
    """Yields animations and videos with one frame far larger than the others: each must end
    ``too_large`` on the worker's media path (video limits: 8.3 MP a frame by default)."""
    for width, height in ((65535, 65535), (20000, 20000), (5000, 5000)):
        yield Case(
            f"bomb_gif_frame1_{width}x{height}",
            _gif_frame_declaring(width, height),
            frozenset({TOO_LARGE}),
            "anim.gif",
            "image/gif",
        )
    small = [encode(Image.new("RGB", (16, 16), (40 * i, 0, 0)), "JPEG") for i in range(4)]
    huge_header = _jpeg_declaring(65535, 65535)
    real_big = encode(Image.new("RGB", (4000, 4000)), "JPEG", quality=10)  # 16 MP, ~250 KB
    for name, odd in (("declared_65535x65535", huge_header), ("real_4000x4000", real_big)):
        yield Case(
            f"bomb_mkv_frame2_{name}",
            _mjpeg_mkv([*small[:2], odd, *small[2:]]),
            frozenset({TOO_LARGE}),
            "clip.mkv",
            "video/x-matroska",
        )


def build_corpus() -> list[Case]:
    """Returns the whole corpus (several hundred cases, all in memory, < 2 MB)."""
    bases = valid_bases()
    cases = [Case(f"valid_{name}", data, ARRAY) for name, data in bases.items()]
    cases += [
        *bombs(),
        *foreign_and_empty(),
        *polyglots(bases),
        *mislabelled(bases),
        *damaged(bases),
    ]
    return cases
