"""The review queue shows a video item as a strip of sampled frames with scores, and the
suspicious frames' Grad-CAM overlays drawn from the maps stored with the verdict."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from moderation.db import make_engine, make_session_factory, session_scope
from moderation.explanation import OVERLAY_ALPHA, video_explain
from moderation.models import Verdict
from moderation.settings import Settings
from moderation.video import VideoLimits, aggregate, load_video
from tests.fixtures.flask_app import PASSWORD, REVIEWER, add_item, login
from tests.video.media import colour_frames, encode


@pytest.fixture()
def reviewers() -> dict[str, str]:
    return {REVIEWER: PASSWORD}


def _video_item(settings: Settings) -> str:
    data = encode(colour_frames(20, change_at=13))
    item = add_item(settings, p_fake=0.9, data=data)
    frames = load_video(data, VideoLimits.from_settings(settings))
    scores = [0.9 if f.pixels.mean() > 80 else 0.1 for f in frames]
    _, chosen = aggregate(scores)
    record = {
        "rule": "mean_top_k",
        "k": len(chosen),
        "frames": [
            {"timestamp_s": f.timestamp, "p_fake": p, "scene_change": f.scene_change}
            for f, p in zip(frames, scores, strict=True)
        ],
        "suspicious_timestamps_s": [frames[i].timestamp for i in chosen],
    }
    cams = np.zeros((len(frames), 7, 7), np.float32)
    cams[:, 0, 0] = 1.0  # each frame's map is hot in its top-left corner
    keys = [(f.timestamp, (64, 48)) for f in frames]
    explanation = video_explain(keys, cams, top=chosen[0])
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            verdict = session.query(Verdict).filter_by(submission_id=item).one()
            verdict.frames, verdict.explanation = record, explanation
    finally:
        engine.dispose()
    return item


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_video_item_strip_frames_and_heatmaps(client: FlaskClient, settings: Settings) -> None:
    item = _video_item(settings)
    image_item = add_item(settings, p_fake=0.5)
    login(client)
    page = client.get("/review/").get_data(as_text=True)
    frames = _stored(settings, item)
    count, bright = len(frames), next(i for i, f in enumerate(frames) if f["p_fake"] > 0.5)
    k = -(-count // 4)
    assert page.count(f"/review/frame/{item}/") == count + k  # every frame + top-k heatmaps
    assert f"/review/frame/{item}/{bright}?heatmap=1" in page
    assert f"{frames[bright]['timestamp_s']:.1f} s · 0.90" in page
    frame = client.get(f"/review/frame/{item}/{bright}")
    assert frame.status_code == 200 and frame.mimetype == "image/png"
    pixels = _png(frame.data)
    assert pixels.shape == (224, 224, 3) and pixels.mean() > 80  # the bright scene after the cut
    assert _png(client.get(f"/review/frame/{item}/0").data).mean() < 80
    heat = client.get(f"/review/frame/{item}/{bright}?heatmap=1")
    assert heat.status_code == 200, heat.get_data(as_text=True)
    assert heat.headers["X-Heatmap"] == "drawn"
    drawn = _png(heat.data).astype(int)
    assert not np.array_equal(drawn, pixels)
    ramp = (drawn - (1 - OVERLAY_ALPHA) * pixels.astype(int)) / OVERLAY_ALPHA
    assert ramp[2, 2, 0] > 100 and ramp[-2, -2, 2] > 100  # hot top-left, cold elsewhere
    assert client.get(f"/review/frame/{item}/{count}").status_code == 404
    assert client.get(f"/review/frame/{image_item}/0").status_code == 404


def _stored(settings: Settings, item: str) -> list[dict]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            record = session.query(Verdict).filter_by(submission_id=item).one().frames
            assert record is not None
            return list(record["frames"])
    finally:
        engine.dispose()
