"""A picture of random pixels for the preprocessing tests (the builders are in
``tests/fixtures/media.py``)."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.fixtures.media import noise as noise_picture


@pytest.fixture()
def noise() -> Image.Image:
    return noise_picture((160, 120), seed=0)
