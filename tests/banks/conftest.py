"""Bank test fixtures: a migrated database (SQLite file or PostgreSQL), sessions, photo-like
images from the demo generator and their re-encoded, resized and cropped copies."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.services import DATABASE_KINDS, create_test_tenant, empty_database_url


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return empty_database_url(request, tmp_path)


@pytest.fixture()
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    from moderation.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture()
def tenant(database_url: str) -> str:
    return create_test_tenant(database_url)[0]


def photo(seed: int, size: int = 640) -> Image.Image:
    """Returns a photo-like picture (the demo generator's camera-style scene)."""
    from training.demo_data import make_real

    return Image.open(io.BytesIO(make_real(np.random.default_rng(seed), size))).convert("RGB")


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def reupload(image: Image.Image, *, quality: int = 60, scale: float = 0.7) -> bytes:
    """Returns the picture resized to ``scale`` and re-encoded as JPEG at ``quality``."""
    size = (round(image.width * scale), round(image.height * scale))
    return jpeg(image.resize(size, Image.Resampling.BICUBIC), quality)
