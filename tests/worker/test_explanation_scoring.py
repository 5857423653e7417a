"""The worker stores the served Grad-CAM map with the verdict, and GET and callbacks carry it.

Triton is a stub here (these tests are about what the worker stores and sends);
tests/e2e/test_explanation_e2e.py scores through the real Triton's ``cam`` output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moderation.contract import ModelMetadata
from moderation.db import session_scope
from moderation.models import CallbackDelivery, Submission, Verdict
from moderation.submissions import get_submission
from serving.client import InferenceResult
from tests.fixtures.media import flat_image
from tests.fixtures.worker import WorkerEnv
from tests.video.media import colour_frames, encode
from worker import scoring


class CamStub:
    """Answers logit 0 per image and, unless ``cams`` is False, a map hot in one corner cell."""

    def __init__(self, *, cams: bool = True, hot: tuple[int, int] = (0, 0)) -> None:
        self.cams, self.hot = cams, hot

    def infer(self, images: np.ndarray) -> InferenceResult:
        logits = np.where(images.reshape(len(images), -1).mean(axis=1) > 100, 4.0, -4.0)
        maps = np.zeros((len(images), 7, 7), np.float32)
        maps[:, self.hot[0], self.hot[1]] = 1.0
        maps[:, 6, 6] = 0.25
        cams = maps if self.cams else None
        return InferenceResult(logits.astype(np.float32), "deepfake_detector", "4", cams)


@pytest.fixture()
def env(worker_env: WorkerEnv, tmp_path: Path) -> WorkerEnv:
    version = tmp_path / "repo" / "deepfake_detector" / "4"
    version.mkdir(parents=True)
    ModelMetadata(version=4, temperature=1.0, pass_below=0.2, flag_at=0.9).write(version)
    worker_env.settings = worker_env.settings.replace(
        model_repository=tmp_path / "repo", max_video_frames=8
    )
    return worker_env


def _score(env: WorkerEnv, data: bytes, client: CamStub) -> str:
    sub_id = env.submission(blob_sha256=env.blobs.put(data), callback_url="http://127.0.0.1:9/hook")
    result = scoring.score_submission(
        submission_id=sub_id,
        session_factory=env.session_factory,
        blobs=env.blobs,
        client=client,  # type: ignore[arg-type]
        settings=env.settings,
    )
    assert result.outcome == scoring.Outcome.SCORED
    return sub_id


def _turned_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 (shown turned 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return flat_image(size, fmt="JPEG", color=(90, 120, 150), exif=exif.tobytes())


def _verdict_json(env: WorkerEnv, sub_id: str) -> tuple[dict, dict]:
    """Returns (the GET representation's verdict, the scored callback's verdict)."""
    with session_scope(env.session_factory) as session:
        row = session.get(Submission, sub_id)
        assert row is not None
        view = get_submission(session=session, tenant_id=row.tenant_id, submission_id=sub_id)
        assert view is not None
        delivery = session.query(CallbackDelivery).filter_by(submission_id=sub_id).one()
        return view.to_json()["verdict"], delivery.payload["data"]["verdict"]


def test_image__map_and_regions_in_the_upright_originals_pixels(env: WorkerEnv) -> None:
    # 700 x 350 stored sideways: upright it is 350 wide and 700 high (the JPEG is drafted, too).
    sub_id = _score(env, _turned_jpeg((700, 350)), CamStub(hot=(0, 6)))
    got, sent = _verdict_json(env, sub_id)
    explanation = got["explanation"]
    assert np.array(explanation["cam"]).shape == (7, 7) and explanation["cam"][0][6] == 1.0
    assert explanation["regions"] == [{"box": [300, 0, 350, 100], "share": 0.8}]
    assert sent["explanation"] == explanation  # the callback carries the same JSON as GET
    with session_scope(env.session_factory) as session:
        stored = session.query(Verdict).filter_by(submission_id=sub_id).one().explanation
    assert {**stored, "frames": None} == explanation  # "frames" is for videos only
    assert sum(len(row) for row in stored["cam"]) == 49


def test_version_without_cam__verdict_as_before_and_explanation_null(env: WorkerEnv) -> None:
    sub_id = _score(env, flat_image((64, 48)), CamStub(cams=False))
    got, sent = _verdict_json(env, sub_id)
    assert got["explanation"] is None and sent["explanation"] is None
    assert {"p_fake", "decision", "model", "thresholds", "video"} <= set(got)


def test_video__the_map_of_every_scored_frame(env: WorkerEnv) -> None:
    sub_id = _score(env, encode(colour_frames(20, change_at=16)), CamStub())
    got, _sent = _verdict_json(env, sub_id)
    frames, explanation = got["video"]["frames"], got["explanation"]
    assert [f["timestamp_s"] for f in explanation["frames"]] == [f["timestamp_s"] for f in frames]
    top = got["video"]["suspicious_timestamps_s"][0]
    top_frame = next(f for f in explanation["frames"] if f["timestamp_s"] == top)
    assert explanation["cam"] == top_frame["cam"] and explanation["regions"]
    width, height = 64, 64  # tests.video.media frames: boxes in the frame's own pixels
    assert explanation["regions"][0]["box"] == [0, 0, round(width / 7), round(height / 7)]
