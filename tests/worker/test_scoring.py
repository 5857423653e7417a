"""Scoring one submission: idempotency, media refusals, calibration from the version's metadata.

Triton is replaced by a stub here because these tests are about the database transitions; the
end-to-end tests (tests/e2e) score through the real bundled Triton.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from moderation.bank_models import MediaHashRow
from moderation.db import session_scope
from moderation.models import CallbackDelivery, Status, Verdict
from moderation.policy import calibrate
from moderation.submissions import get_submission
from serving.client import InferenceUnavailable
from tests.fixtures.media import encode, flat_image, noise
from tests.fixtures.worker import StubClient, WorkerEnv, score, submission_row
from worker import scoring
from worker.models import ModelAnswer


def _count(env: WorkerEnv, model: type, sub_id: str) -> int:
    with session_scope(env.session_factory) as session:
        return int(session.scalar(select(func.count()).where(model.submission_id == sub_id)) or 0)


def test_score_submission__twice__one_verdict(scoring_env: WorkerEnv) -> None:
    sha = scoring_env.blobs.put(flat_image((64, 48)))
    sub_id = scoring_env.submission(blob_sha256=sha, callback_url="http://127.0.0.1:9/hook")
    client = StubClient(logit=2.0)
    first = score(scoring_env, sub_id, client)
    second = score(scoring_env, sub_id, client)
    assert first.outcome is scoring.Outcome.SCORED and first.delivery_id is not None
    assert second.outcome is scoring.Outcome.NOOP and client.calls == 1
    assert _count(scoring_env, Verdict, sub_id) == 1
    assert _count(scoring_env, CallbackDelivery, sub_id) == 1
    p_fake = calibrate(2.0, 2.0)  # temperature from the answering version's metadata.json
    assert 0.2 <= p_fake < 0.9 and submission_row(scoring_env, sub_id).status == Status.NEEDS_REVIEW
    with session_scope(scoring_env.session_factory) as session:
        verdict = session.scalars(select(Verdict).where(Verdict.submission_id == sub_id)).one()
        assert (verdict.model_version, verdict.temperature) == ("7", 2.0)
        assert verdict.p_fake == pytest.approx(p_fake)
        delivery = session.get(CallbackDelivery, first.delivery_id)
        assert delivery is not None and delivery.event_type == "submission.scored"
        data = delivery.payload["data"]
        assert (data["id"], data["status"]) == (sub_id, Status.NEEDS_REVIEW)
        assert data["verdict"]["p_fake"] == pytest.approx(p_fake)
        assert data["verdict"]["model"] == {"name": "deepfake_detector", "version": "7"}


def test_the_callbacks_data_is_the_get_representation(scoring_env: WorkerEnv) -> None:
    """The scorer builds its view from the row it updated and the verdict it inserted, the reader
    from the ORM: both go through one builder and give the same JSON."""
    sha = scoring_env.blobs.put(flat_image((64, 48)))
    scored = scoring_env.submission(blob_sha256=sha, callback_url="http://127.0.0.1:9/hook")
    failed = scoring_env.submission(blob_sha256=sha, callback_url="http://127.0.0.1:9/hook")
    assert score(scoring_env, scored, StubClient(logit=2.0)).outcome is scoring.Outcome.SCORED
    scoring.fail_submission(
        submission_id=failed,
        session_factory=scoring_env.session_factory,
        reason="internal_error",
        detail="gave up",
    )
    with session_scope(scoring_env.session_factory) as session:
        for sub_id in (scored, failed):
            view = get_submission(session=session, submission_id=sub_id, tenant_id=None)
            delivery = session.scalars(
                select(CallbackDelivery).where(CallbackDelivery.submission_id == sub_id)
            ).one()
            assert view is not None and delivery.payload["data"] == view.to_json()


def test_score_submission__lost_race__no_second_verdict(scoring_env: WorkerEnv) -> None:
    sha = scoring_env.blobs.put(flat_image((64, 48)))
    sub_id = scoring_env.submission(blob_sha256=sha)
    result = StubClient(logit=-5.0).infer(np.zeros((1, 224, 224, 3), np.uint8))
    answers = [ModelAnswer(result.model_name, result.model_version, result.logits, 0.0)]
    claimed, _ = scoring._claim(scoring_env.session_factory, sub_id, scoring_env.settings)
    assert claimed is not None and claimed.blob_sha256 == sha
    first = scoring._record_verdict(
        scoring_env.session_factory, sub_id, answers, scoring_env.settings, claimed
    )
    # A second worker that scored the same message concurrently: status moved on -> no-op.
    second = scoring._record_verdict(
        scoring_env.session_factory, sub_id, answers, scoring_env.settings, claimed
    )
    assert (first.outcome, first.status) == (scoring.Outcome.SCORED, Status.AUTO_PASSED)
    assert (second.outcome, second.status) == (scoring.Outcome.NOOP, Status.AUTO_PASSED)
    assert _count(scoring_env, Verdict, sub_id) == 1


def test_a_verdict_stored_by_another_run_leaves_nothing_half_written(
    scoring_env: WorkerEnv,
) -> None:
    """The verdict, media hash, outbox row and status are one write: when a verdict exists already
    (another run stored it, the status not moved yet), none of them is written."""
    sha = scoring_env.blobs.put(encode(noise((96, 64))))  # detailed enough for a PDQ hash
    sub_id = scoring_env.submission(blob_sha256=sha, callback_url="http://127.0.0.1:9/hook")
    result = StubClient(logit=-5.0).infer(np.zeros((1, 224, 224, 3), np.uint8))
    answers = [ModelAnswer(result.model_name, result.model_version, result.logits, 0.0)]
    claimed, _ = scoring._claim(scoring_env.session_factory, sub_id, scoring_env.settings)
    assert claimed is not None
    with session_scope(scoring_env.session_factory) as session:
        session.add(
            Verdict(
                submission_id=sub_id,
                logit=0.0,
                p_fake=0.5,
                decision=Status.NEEDS_REVIEW,
                model_name="other",
                model_version="1",
                pass_below=0.2,
                flag_at=0.9,
            )
        )
    stored = scoring._record_verdict(
        scoring_env.session_factory, sub_id, answers, scoring_env.settings, claimed
    )
    assert stored.outcome is scoring.Outcome.NOOP and stored.delivery_id is None
    assert submission_row(scoring_env, sub_id).status == Status.SCORING
    assert _count(scoring_env, CallbackDelivery, sub_id) == 0
    assert _count(scoring_env, MediaHashRow, sub_id) == 0
    assert score(scoring_env, sub_id, StubClient()).outcome is scoring.Outcome.NOOP
    with session_scope(scoring_env.session_factory) as session:
        kept = session.scalars(select(Verdict).where(Verdict.submission_id == sub_id)).one()
        assert kept.model_name == "other"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"GIF89a" + b"\x00" * 40, "unreadable_media"), (b"%PDF-1.7 hello", "unsupported_media")],
    ids=["corrupt_gif", "pdf"],
)
def test_score_submission__bad_media__failed_not_retried(
    scoring_env: WorkerEnv, data: bytes, reason: str
) -> None:
    sub_id = scoring_env.submission(blob_sha256=scoring_env.blobs.put(data))
    client = StubClient()
    result = score(scoring_env, sub_id, client)
    assert (result.outcome, client.calls) == (scoring.Outcome.FAILED, 0)
    sub = submission_row(scoring_env, sub_id)
    assert (sub.status, sub.failure_reason) == (Status.FAILED, reason)
    assert sub.failure_detail and sub.completed_at is not None


def test_score_submission__bomb_frame_in_animation__too_large_at_first_attempt(
    scoring_env: WorkerEnv,
) -> None:
    """A GIF whose second frame declares 65535x65535 (4.3 gigapixels) ends ``too_large``."""
    from tests.reliability.input_corpus import _gif_frame_declaring

    data = _gif_frame_declaring(65535, 65535)
    sub_id = scoring_env.submission(blob_sha256=scoring_env.blobs.put(data))
    client = StubClient()
    result = score(scoring_env, sub_id, client)
    assert (result.outcome, client.calls) == (scoring.Outcome.FAILED, 0)
    sub = submission_row(scoring_env, sub_id)
    assert (sub.status, sub.failure_reason, sub.attempts) == (Status.FAILED, "too_large", 1)
    assert sub.failure_detail and " at 0x" not in sub.failure_detail


def test_fail_submission__detail_loses_object_reprs_and_paths(scoring_env: WorkerEnv) -> None:
    sub_id = scoring_env.submission()
    scoring.fail_submission(
        submission_id=sub_id,
        session_factory=scoring_env.session_factory,
        reason="internal_error",
        detail="OSError: cannot identify image file <_io.BytesIO object at 0x7f00aa>; "
        "[Errno 2] No such file or directory: '/srv/dfmod/var/blobs/ab/abcd'",
    )
    detail = submission_row(scoring_env, sub_id).failure_detail or ""
    assert " at 0x" not in detail and "/srv/" not in detail and "cannot identify" in detail


def test_score_submission__unavailable__raises_and_stays_scoring(scoring_env: WorkerEnv) -> None:
    sub_id = scoring_env.submission(blob_sha256=scoring_env.blobs.put(flat_image((64, 48))))
    with pytest.raises(InferenceUnavailable):
        score(scoring_env, sub_id, StubClient(fail=True))
    assert submission_row(scoring_env, sub_id).status == Status.SCORING
    assert score(scoring_env, sub_id, StubClient(-3.0)).outcome is scoring.Outcome.SCORED


def test_score_submission__finished__noop(scoring_env: WorkerEnv) -> None:
    sha = scoring_env.blobs.put(flat_image((64, 48)))
    for status in (Status.FAILED, Status.AUTO_FLAGGED, Status.DECIDED):
        sub_id = scoring_env.submission(blob_sha256=sha, status=status)
        assert score(scoring_env, sub_id, StubClient()).outcome is scoring.Outcome.NOOP


def test_score_submission__unfetched_url__needs_fetch(scoring_env: WorkerEnv) -> None:
    sub_id = scoring_env.submission(media_kind="url", media_url="http://127.0.0.1:9/a.png")
    assert score(scoring_env, sub_id, StubClient()).outcome is scoring.Outcome.NEEDS_FETCH


def test_fail_submission__writes_failed_event(scoring_env: WorkerEnv) -> None:
    sub_id = scoring_env.submission(callback_url="http://127.0.0.1:9/hook")
    result = scoring.fail_submission(
        submission_id=sub_id,
        session_factory=scoring_env.session_factory,
        reason="inference_unavailable",
        detail="Triton down",
    )
    assert result.delivery_id is not None
    with session_scope(scoring_env.session_factory) as session:
        row = session.get(CallbackDelivery, result.delivery_id)
        assert row is not None and row.event_type == "submission.failed"
        assert row.payload["data"]["failure"]["reason"] == "inference_unavailable"
    again = scoring.fail_submission(
        submission_id=sub_id, session_factory=scoring_env.session_factory, reason="x", detail="y"
    )
    assert again.outcome is scoring.Outcome.NOOP
