"""The optional face stage: OpenCV's packaged detector finds the face in a real portrait (the
Grace Hopper photo shipped with matplotlib), crops go through the image path, and with
``video_faces`` on the worker scores crops with their frame and records which one drove it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from moderation.contract import ModelMetadata
from moderation.db import session_scope
from moderation.faces import face_crops, largest_faces
from moderation.models import Verdict
from moderation.policy import calibrate
from moderation.preprocess import image_to_input
from moderation.video import VideoLimits, load_video
from serving.client import InferenceResult
from tests.fixtures.worker import WorkerEnv
from tests.video.media import animated, encode
from worker import scoring


def portrait(width: int = 320) -> Image.Image:
    """Returns the portrait, scaled to ``width``, in RGB."""
    with Image.open(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))) as image:
        rgb = image.convert("RGB")
    return rgb.resize((width, round(rgb.height * width / rgb.width)))


def wide_frames(count: int) -> list[np.ndarray]:
    """Returns frames where the portrait fills the left third of a 480x200 grey frame."""
    canvas = Image.new("RGB", (480, 200), (90, 90, 90))
    canvas.paste(portrait(160), (10, 0))
    return [np.asarray(canvas)] * count


def test_largest_face_found_and_cropped_with_margin() -> None:
    image = portrait()
    (box,) = largest_faces(image, count=3)
    x, y, w, h = box
    assert 60 < x + w / 2 < 200 and 40 < y + h / 2 < 200 and w > 60  # the face, not the uniform
    (crop,) = face_crops(image, count=1)
    assert crop.box == box and crop.pixels.shape == (224, 224, 3)
    margin = round(w * 0.25)
    region = image.crop((x - margin, y - margin, x + w + margin, y + h + margin))
    assert np.array_equal(crop.pixels, image_to_input(region))
    assert largest_faces(Image.new("RGB", (200, 200), (128, 128, 128)), count=2) == []
    assert largest_faces(image, count=0) == []


def test_frames_carry_crops_only_when_enabled() -> None:
    data = encode(wide_frames(10), fps=10)
    assert all(f.crops == () for f in load_video(data, VideoLimits(max_frames=4)))
    frames = load_video(data, VideoLimits(max_frames=4, faces=2))
    assert frames and all(len(f.crops) == 1 for f in frames)
    gif = load_video(animated(wide_frames(3)), VideoLimits(max_frames=4, faces=1))
    assert all(len(f.crops) == 1 for f in gif)


class CropStub:
    """Logit 3 for face crops (mostly skin, mean > 100), -3 for the grey-dominated frames."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, images: np.ndarray) -> InferenceResult:
        self.shapes.append(images.shape)
        means = images.reshape(len(images), -1).mean(axis=1)
        return InferenceResult(np.where(means > 100, 3.0, -3.0), "deepfake_detector", "5")


@pytest.fixture()
def env(worker_env: WorkerEnv, tmp_path: Path) -> WorkerEnv:
    version = tmp_path / "repo" / "deepfake_detector" / "5"
    version.mkdir(parents=True)
    ModelMetadata(version=5, temperature=1.0, pass_below=0.2, flag_at=0.9).write(version)
    worker_env.settings = worker_env.settings.replace(
        model_repository=tmp_path / "repo", max_video_frames=4, video_faces=1
    )
    return worker_env


def test_worker_scores_crops_with_frames_and_records_the_driver(env: WorkerEnv) -> None:
    client = CropStub()
    sub_id = env.submission(blob_sha256=env.blobs.put(encode(wide_frames(10), fps=10)))
    result = scoring.score_submission(
        submission_id=sub_id,
        session_factory=env.session_factory,
        blobs=env.blobs,
        client=client,  # type: ignore[arg-type]
        settings=env.settings,
    )
    assert result.outcome == scoring.Outcome.SCORED
    assert client.shapes == [(6, 224, 224, 3)]  # 3 frames + 3 crops in one batch
    with session_scope(env.session_factory) as session:
        verdict = session.query(Verdict).filter_by(submission_id=sub_id).one()
        record, p_fake = verdict.frames, verdict.p_fake
    assert record is not None and p_fake == pytest.approx(calibrate(3.0, 1.0))
    frame = record["frames"][0]
    assert frame["driver"] == "face_0" and frame["frame_p_fake"] == pytest.approx(0.0474, abs=1e-3)
    assert len(frame["crops"]) == 1 and len(frame["crops"][0]["box"]) == 4
    assert record["drivers"] == ["face_0"]
