"""load_image: accepted formats and modes all become the model's uint8 [224, 224, 3] RGB input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from moderation import contract
from moderation.preprocess import ImageLimits, load_image, load_image_file, sniff_format, to_rgb
from tests.fixtures.media import encode, halves

ALL = ImageLimits(formats=("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"))


def _is_model_input(array: np.ndarray) -> bool:
    return (
        array.dtype == np.uint8
        and array.shape == contract.INPUT_SHAPE
        and array.flags["C_CONTIGUOUS"]
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_default_formats_are_sniffed_and_decoded(noise: Image.Image, fmt: str) -> None:
    data = encode(noise, fmt)
    assert sniff_format(data) == fmt
    assert _is_model_input(load_image(data))


def test_lossless_input_keeps_its_colours() -> None:
    array = load_image(encode(halves((448, 448)), "PNG"))
    assert tuple(array[112, 10]) == (255, 0, 0)
    assert tuple(array[112, 213]) == (0, 0, 255)


def test_whole_image_is_resized_without_cropping() -> None:
    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, :8] = 255  # a thin white stripe at the very left edge must stay in view
    array = load_image(encode(Image.fromarray(wide), "PNG"))
    assert array[:, 0].mean() > 200 and array[:, 100:].max() == 0


def test_same_bytes_give_identical_arrays(noise: Image.Image, tmp_path) -> None:
    data = encode(noise, "JPEG", quality=90)
    path = tmp_path / "photo.bin"
    path.write_bytes(data)
    assert np.array_equal(load_image(data), load_image(data))
    assert np.array_equal(load_image(data), load_image_file(str(path)))


def _mode_image(mode: str) -> Image.Image:
    base = halves()
    if mode == "I;16":
        return Image.fromarray(np.full((32, 64), 65535, np.uint16))
    if mode == "P_transparent":
        image = base.convert("P")
        image.info["transparency"] = 0
        return image
    return base.convert(mode)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("P", "PNG"),
        ("P_transparent", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("1", "PNG"),
        ("1", "BMP"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("P", "GIF"),
    ],
)
def test_every_mode_becomes_rgb(mode: str, fmt: str) -> None:
    data = encode(_mode_image(mode), fmt)
    assert _is_model_input(load_image(data, ALL))


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent
    array = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert array.min() == 255


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = np.full((32, 32), 32768, np.uint16)  # half of full scale
    array = load_image(encode(Image.fromarray(grey), "PNG"))
    assert np.all(np.abs(array.astype(int) - 127) <= 1)


def test_cmyk_black_is_black() -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 0, 0, 255))
    array = load_image(encode(cmyk, "JPEG", quality=95))
    assert array.max() < 20


@pytest.mark.parametrize("mode", ["I;16B", "F", "LA", "PA", "HSV", "YCbCr", "RGBX"])
def test_to_rgb_handles_in_memory_modes(mode: str) -> None:
    source = halves()
    if mode == "I;16B":
        image = Image.fromarray(np.full((8, 8), 1000, np.uint16)).convert("I").convert("I;16B")
    elif mode == "PA":
        image = source.convert("RGBA").convert("PA")
    else:
        image = source.convert(mode)
    assert to_rgb(image).mode == "RGB"


@pytest.mark.parametrize(("fmt", "sniffed"), [("HEIF", "HEIF"), ("AVIF", "AVIF")])
def test_phone_formats_are_sniffed_decoded_and_kept_in_colour(fmt: str, sniffed: str) -> None:
    """HEIC (pillow-heif) and AVIF (Pillow) are accepted by default, like JPEG."""
    from moderation.preprocess import _register_heif

    assert _register_heif()
    data = encode(halves((448, 448)), fmt, quality=95)
    assert sniff_format(data) == sniffed and sniff_format(data[:64]) == sniffed  # fetch sniffs 64
    array = load_image(data)
    assert _is_model_input(array)
    left, right = array[112, 20].astype(int), array[112, 200].astype(int)
    assert left[0] > 200 > 60 > left[2] and right[2] > 200 > 60 > right[0]


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_obey_the_pixel_limit_before_decoding(fmt: str) -> None:
    from moderation.preprocess import MediaRejected

    data = encode(halves((448, 448)), fmt)
    with pytest.raises(MediaRejected) as info:
        load_image(data, ImageLimits(max_pixels=448 * 448 - 1))
    assert info.value.reason == "too_large"
    with pytest.raises(MediaRejected) as refused:
        load_image(data, ImageLimits(formats=("JPEG",)))
    assert refused.value.reason == "unsupported_media"


def test_video_brands_are_not_taken_for_phone_images() -> None:
    from moderation.video import sniff_video

    mp4 = b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41"
    assert sniff_format(mp4) is None and sniff_video(mp4) == "MP4/MOV"
    avif_in_mif1 = b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf"
    assert sniff_format(avif_in_mif1) == "AVIF" and sniff_video(avif_in_mif1) is None
