"""Overlays drawn from the map stored with the verdict: no model pass, no torch, never broken."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from moderation.db import make_engine, make_session_factory, session_scope
from moderation.explanation import OVERLAY_ALPHA, explain
from moderation.models import Verdict
from moderation.settings import Settings
from tests.fixtures.flask_app import add_item, login
from tests.fixtures.media import image_bytes


def _explained_item(settings: Settings, *, size: tuple[int, int] = (160, 120)) -> str:
    item = add_item(settings, p_fake=0.6, data=image_bytes(size=size, seed=8))
    cam = np.zeros((7, 7), np.float32)
    cam[0, 0], cam[0, 1] = 1.0, 0.6
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            verdict = session.query(Verdict).filter_by(submission_id=item).one()
            verdict.explanation = explain(cam, width=size[0], height=size[1])
    finally:
        engine.dispose()
    return item


@pytest.fixture()
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes torch and the on-demand path unimportable in this process for the test."""
    for name in ("torch", "torchvision", "training.checkpoint", "training.gradcam"):
        monkeypatch.setitem(sys.modules, name, None)


def test_overlay__from_the_stored_map_without_torch(
    client: FlaskClient, settings: Settings, no_torch: None
) -> None:
    item = _explained_item(settings)
    login(client)
    response = client.get(f"/review/gradcam/{item}")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Heatmap"] == "drawn"
    drawn = np.asarray(Image.open(io.BytesIO(response.data)).convert("RGB"), dtype=int)
    assert drawn.shape == (120, 160, 3)  # the upright picture, not the 224 x 224 model input
    picture = np.asarray(Image.open(io.BytesIO(image_bytes(size=(160, 120), seed=8))), dtype=int)
    heat = (drawn - (1 - OVERLAY_ALPHA) * picture) / OVERLAY_ALPHA  # the blended colour ramp
    assert heat[3, 3, 0] > 100 and heat[3, 3, 2] < 30  # dark red where the map peaks
    assert heat[-3, -3, 2] > 100 and heat[-3, -3, 0] < 30  # dark blue where it is zero


def test_queue__overlay_control_and_regions_or_a_reason_in_words(
    client: FlaskClient, settings: Settings, no_torch: None
) -> None:
    explained = _explained_item(settings)
    older = add_item(settings, p_fake=0.5, data=image_bytes(seed=9))
    login(client)
    page = client.get("/review/").get_data(as_text=True)
    assert f'data-src="/review/gradcam/{explained}"' in page
    assert "of the map at x 0–46, y 0–17" in page  # the region, in the original's pixels
    assert f"/review/gradcam/{older}" not in page  # no image that could only be a placard
    assert "No Grad-CAM map stored with this verdict (model version 1;" in page
    placard = client.get(f"/review/gradcam/{older}")
    assert placard.status_code == 200 and placard.headers["X-Heatmap"] == "unavailable"
    assert Image.open(io.BytesIO(placard.data)).format == "PNG"


def test_overlay__media_gone_or_unreadable__a_placard(
    client: FlaskClient, settings: Settings
) -> None:
    item = add_item(settings, p_fake=0.5, data=b"not an image at all")
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            verdict = session.query(Verdict).filter_by(submission_id=item).one()
            verdict.explanation = explain(np.ones((7, 7)), width=10, height=10)
    finally:
        engine.dispose()
    login(client)
    response = client.get(f"/review/gradcam/{item}")
    assert response.status_code == 200 and response.headers["X-Heatmap"] == "unavailable"
    assert Image.open(io.BytesIO(response.data)).format == "PNG"


def test_media_gone__queue_images_are_placards_not_broken(
    client: FlaskClient, settings: Settings
) -> None:
    item = _explained_item(settings)
    for blob in Path(settings.blob_dir).rglob("*"):
        if blob.is_file():
            blob.unlink()
    login(client)
    for path in (f"/review/media/{item}", f"/review/gradcam/{item}"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "image/png", path
        assert Image.open(io.BytesIO(response.data)).format == "PNG"
    assert client.get(f"/review/gradcam/{item}").headers["X-Heatmap"] == "unavailable"
