"""A video end to end on the embedded stack: HTTP upload → worker samples frames → one Triton batch
→ verdict with per-frame scores → GET and the signed callback carry them. A video without a video
stream ends ``failed`` with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from moderation.contract import ModelMetadata
from moderation.policy import calibrate
from moderation.video import VideoLimits, aggregate, load_video
from serving.client import TritonClient
from tests.fixtures.media import image_bytes
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import E2E_ENV, Stack, embedded_stack, triton_env
from tests.video.media import audio_only, colour_frames, encode

pytestmark = pytest.mark.integration

MAX_FRAMES = 8


@pytest.fixture(scope="module")
def video_stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API and a worker on the real Triton, with a small per-video frame cap."""
    env = {
        **triton_env(triton_server),
        **E2E_ENV,
        "DFMOD_MAX_VIDEO_FRAMES": str(MAX_FRAMES),
    }
    started = embedded_stack(tmp_path_factory.mktemp("stack-video"), env)
    with started:
        yield started


def _expected(data: bytes, triton_server: object) -> tuple[list[float], float, list[float]]:
    frames = load_video(data, VideoLimits(max_frames=MAX_FRAMES))
    client = TritonClient(triton_server.grpc_url)  # type: ignore[attr-defined]
    try:
        logits = client.infer(np.stack([f.pixels for f in frames])).logits
    finally:
        client.close()
    repo = triton_server.repository  # type: ignore[attr-defined]
    meta = ModelMetadata.read(repo / "deepfake_detector" / "1")
    scores = [calibrate(float(x), meta.temperature) for x in logits]
    p_fake, chosen = aggregate(scores)
    return scores, p_fake, [round(frames[i].timestamp, 3) for i in chosen]


def test_video_upload__frames_scored__verdict_and_callback_carry_them(
    video_stack: Stack, callback_receiver: CallbackReceiver, triton_server: object
) -> None:
    tenant = video_stack.tenant()
    callback_receiver.secret = tenant.secret
    data = encode(colour_frames(20, change_at=13))
    response = video_stack.submit_file(
        tenant.api_key, data, filename="clip.mp4", callback_url=callback_receiver.url("/v")
    )
    assert response.status_code == 202, response.text
    final = video_stack.wait_final(tenant.api_key, response.json()["id"])
    assert final["status"] in {"auto_passed", "auto_flagged", "needs_review"}, final
    video = final["verdict"]["video"]
    scores, p_fake, suspicious = _expected(data, triton_server)
    assert [f["p_fake"] for f in video["frames"]] == pytest.approx(scores, abs=1e-5)
    assert [f["scene_change"] for f in video["frames"]].count(True) == 1
    assert video["k"] == len(suspicious) == 2 and video["rule"] == "mean_top_k"
    assert final["verdict"]["p_fake"] == pytest.approx(p_fake, abs=1e-5)
    assert len(video["suspicious_timestamps_s"]) == 2
    explanation = final["verdict"]["explanation"]  # real Triton's cam, one map per scored frame
    assert [f["timestamp_s"] for f in explanation["frames"]] == [
        f["timestamp_s"] for f in video["frames"]
    ]
    assert all(np.array(f["cam"]).shape == (7, 7) for f in explanation["frames"])
    top = video["suspicious_timestamps_s"][0]
    assert explanation["cam"] == next(
        f["cam"] for f in explanation["frames"] if f["timestamp_s"] == top
    )
    (callback,) = callback_receiver.wait_for(1, timeout_s=30)
    assert callback.signature_ok
    assert callback.json()["data"]["verdict"]["video"] == video
    assert callback.json()["data"]["verdict"]["explanation"] == explanation


def test_image_verdict_has_no_video_and_audio_only_fails(video_stack: Stack) -> None:
    tenant = video_stack.tenant()
    response = video_stack.submit_file(tenant.api_key, audio_only(), filename="a.mp4")
    assert response.status_code == 202, response.text
    final = video_stack.wait_final(tenant.api_key, response.json()["id"])
    assert final["status"] == "failed"
    assert final["failure"]["reason"] == "unsupported_media", final
    assert "no video stream" in final["failure"]["detail"]
    image = video_stack.submit_file(tenant.api_key, image_bytes(seed=3))
    assert image.status_code == 202, image.text
    scored = video_stack.wait_final(tenant.api_key, image.json()["id"])
    assert scored["verdict"] is not None and scored["verdict"]["video"] is None, scored
