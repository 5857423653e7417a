"""The stored explanation: regions in original-image pixels, overlays and placards (no torch)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from moderation.explanation import (
    check_cam,
    explain,
    overlay,
    placard,
    regions,
    video_explain,
)


def _cam(*cells: tuple[int, int, float]) -> np.ndarray:
    cam = np.zeros((7, 7), np.float32)
    for r, c, v in cells:
        cam[r, c] = v
    return cam


def test_regions__boxes_in_original_pixels_largest_share_first() -> None:
    cam = _cam((0, 0, 1.0), (0, 1, 0.8), (5, 6, 0.6), (3, 3, 0.2))
    found = regions(cam, width=700, height=350)
    assert found == [
        {"box": [0, 0, 200, 50], "share": round(1.8 / 2.6, 4)},
        {"box": [600, 250, 700, 300], "share": round(0.6 / 2.6, 4)},
    ]


def test_regions__at_most_three_and_none_for_an_empty_map() -> None:
    cam = _cam((0, 0, 1.0), (0, 2, 1.0), (0, 4, 1.0), (0, 6, 1.0))
    assert len(regions(cam, width=7, height=7)) == 3
    assert regions(np.zeros((7, 7)), width=7, height=7) == []


def test_explain__map_rounded_to_four_places_and_json_ready() -> None:
    cam = np.full((7, 7), 0.123456, np.float32)
    got = explain(cam, width=100, height=100)
    assert np.array(got["cam"]).shape == (7, 7) and got["cam"][0][0] == 0.1235
    assert got["regions"] == [{"box": [0, 0, 100, 100], "share": 1.0}]


@pytest.mark.parametrize("bad", [np.zeros((6, 7)), np.full((7, 7), np.nan), [[1, 2]]])
def test_check_cam__refuses_what_is_not_a_7x7_map(bad: object) -> None:
    with pytest.raises(ValueError, match="7, 7"):
        check_cam(bad)


def test_video_explain__top_frame_at_the_top_every_frame_below() -> None:
    cams = np.stack([_cam((0, 0, 1.0)), _cam((6, 6, 1.0))])
    got = video_explain([(0.0, (70, 70)), (1.5, (70, 70))], cams, top=1)
    assert got["regions"] == [{"box": [60, 60, 70, 70], "share": 1.0}]
    assert [f["timestamp_s"] for f in got["frames"]] == [0.0, 1.5]
    assert got["frames"][0]["regions"][0]["box"] == [0, 0, 10, 10]


def test_overlay__a_png_of_the_picture_hot_where_the_map_is() -> None:
    picture = Image.new("RGB", (140, 70), (128, 128, 128))
    png = overlay(picture, _cam((0, 0, 1.0)))
    drawn = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    assert drawn.shape == (70, 140, 3)
    hot, cold = drawn[2, 2], drawn[-2, -2]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # red where the map peaks, blue elsewhere
    assert drawn[0, 5].tolist() == [255, 255, 255]  # the region's outline (box 0..20 x 0..10)
    assert drawn[0, 60].tolist() != [255, 255, 255]


def test_placard__a_real_png_that_carries_words() -> None:
    image = Image.open(io.BytesIO(placard("No map stored for this item, and here is why.")))
    assert image.format == "PNG" and image.size[0] > 100
    assert np.asarray(image.convert("L")).min() < 128  # text was drawn
