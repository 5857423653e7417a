"""The worker's video branch: one Triton call for all sampled frames, the stored frame record,
the aggregation rule applied to the calibrated frame scores, and refusals ending ``failed``.

Triton is a stub here (these tests are about what the worker stores); test_video_e2e.py scores
through the real Triton.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moderation.contract import ModelMetadata
from moderation.db import session_scope
from moderation.models import Status, Submission, Verdict
from moderation.policy import calibrate
from serving.client import InferenceResult
from tests.fixtures.worker import WorkerEnv
from tests.video.media import animated, colour_frames, encode
from worker import scoring


class FrameStub:
    """Answers logit = 4 for bright frames (mean > 100), -4 otherwise; records batch shapes."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, images: np.ndarray) -> InferenceResult:
        self.shapes.append(images.shape)
        logits = np.where(images.reshape(len(images), -1).mean(axis=1) > 100, 4.0, -4.0)
        return InferenceResult(logits.astype(np.float32), "deepfake_detector", "3")


@pytest.fixture()
def env(worker_env: WorkerEnv, tmp_path: Path) -> WorkerEnv:
    version = tmp_path / "repo" / "deepfake_detector" / "3"
    version.mkdir(parents=True)
    ModelMetadata(version=3, temperature=2.0, pass_below=0.2, flag_at=0.9).write(version)
    worker_env.settings = worker_env.settings.replace(
        model_repository=tmp_path / "repo", max_video_frames=8
    )
    return worker_env


def _score(env: WorkerEnv, data: bytes, client: FrameStub) -> tuple[str, scoring.ScoreResult]:
    sub_id = env.submission(blob_sha256=env.blobs.put(data))
    result = scoring.score_submission(
        submission_id=sub_id,
        session_factory=env.session_factory,
        blobs=env.blobs,
        client=client,  # type: ignore[arg-type]
        settings=env.settings,
    )
    return sub_id, result


def test_frames_scored_in_one_batch_and_aggregated(env: WorkerEnv) -> None:
    client = FrameStub()
    # 20 frames, bright from 1.6 s: the scene-change frame and the last uniform one are "fake".
    sub_id, result = _score(env, encode(colour_frames(20, change_at=16)), client)
    assert result.outcome == scoring.Outcome.SCORED
    assert client.shapes == [(7, 224, 224, 3)]
    with session_scope(env.session_factory) as session:
        verdict = session.query(Verdict).filter_by(submission_id=sub_id).one()
        record, p_fake, logit = verdict.frames, verdict.p_fake, verdict.logit
    assert record is not None
    fake, real = calibrate(4.0, 2.0), calibrate(-4.0, 2.0)
    assert [f["p_fake"] for f in record["frames"]] == pytest.approx([real] * 5 + [fake] * 2)
    assert record["k"] == 2 and p_fake == pytest.approx(fake) and logit == pytest.approx(4.0)
    assert record["suspicious_timestamps_s"] == [1.6, 1.7]
    assert [f["scene_change"] for f in record["frames"]] == [False] * 5 + [True, False]


def test_animated_gif_takes_the_video_path(env: WorkerEnv) -> None:
    client = FrameStub()
    _, result = _score(env, animated(colour_frames(6)), client)
    assert result.outcome == scoring.Outcome.SCORED and client.shapes == [(6, 224, 224, 3)]


def test_refused_videos_end_failed_without_inference(env: WorkerEnv) -> None:
    client = FrameStub()
    env.settings = env.settings.replace(max_video_seconds=1.0)
    sub_id, result = _score(env, encode(colour_frames(20)), client)
    assert result.outcome == scoring.Outcome.FAILED and client.shapes == []
    env.settings = env.settings.replace(video_enabled=0)
    other_id, _ = _score(env, encode(colour_frames(5)), client)
    with session_scope(env.session_factory) as session:
        reasons = [session.get(Submission, i).failure_reason for i in (sub_id, other_id)]  # type: ignore[union-attr]
        assert session.get(Submission, sub_id).status == Status.FAILED  # type: ignore[union-attr]
    assert reasons == ["too_large", "unsupported_media"]
    assert client.shapes == []
