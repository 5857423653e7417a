"""On-demand Grad-CAM for verdicts stored without a map (before the cam output), where torch is
installed: computed from the version's checkpoint, then cached."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from moderation.settings import Settings
from tests.fixtures.flask_app import add_item, login
from tests.fixtures.media import image_bytes


def test_heatmap_is_computed_once_and_cached(client: FlaskClient, settings: Settings) -> None:
    checkpoint = settings.model_repository / "deepfake_detector" / "1" / "checkpoint.pt"
    if not checkpoint.is_file():
        pytest.fail(f"{checkpoint} is committed with version 1; expected it to exist")
    data = image_bytes(size=(160, 120), seed=5)
    item = add_item(settings, p_fake=0.5, data=data)
    login(client)
    response = client.get(f"/review/gradcam/{item}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(response.data)))
    assert overlay.shape == (224, 224, 3)
    cached = Path(settings.data_dir) / "gradcam" / f"{item}-v1.png"
    assert cached.read_bytes() == response.data
    cached.write_bytes(b"cached-marker")  # a second request is served from the cache
    assert client.get(f"/review/gradcam/{item}").data == b"cached-marker"


def test_cam_is_normalised_and_overlay_differs_from_input(settings: Settings) -> None:
    from moderation.preprocess import load_image
    from training.gradcam import _load_model, cam

    checkpoint = settings.model_repository / "deepfake_detector" / "1" / "checkpoint.pt"
    image = load_image(image_bytes(size=(224, 224), seed=6))
    heat = cam(_load_model(checkpoint), image)
    assert heat.shape == (224, 224)
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.01  # not a flat map


def test_heatmap_without_map_or_checkpoint__says_why(
    client: FlaskClient, settings: Settings
) -> None:
    item = add_item(settings, p_fake=0.5, data=image_bytes(seed=7), version="999")
    login(client)
    response = client.get(f"/review/gradcam/{item}")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Heatmap"] == "unavailable"
    assert Image.open(io.BytesIO(response.data)).format == "PNG"  # a placard, not a broken image
    assert "No Grad-CAM map stored" in client.get("/review/").get_data(as_text=True)
    assert client.get("/review/gradcam/sub_missing").status_code == 404
