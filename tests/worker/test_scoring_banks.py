"""Scoring with banks: the stored hash, the match and the decision it makes per tenant policy.

Triton is a stub here (these tests are about the decision); tests/e2e/test_banks.py runs the
same through the real stack.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from moderation import banks
from moderation.bank_index import BankMatcher
from moderation.bank_models import MediaHashRow
from moderation.db import session_scope
from moderation.mediahash import bytes_pdq, video_hash
from moderation.models import Verdict
from moderation.submissions import get_submission
from serving.client import InferenceResult
from tests.fixtures.media import jpeg, photo, reupload
from tests.fixtures.worker import WorkerEnv, with_stub_version
from worker import scoring


class StubClient:
    """Answers logit 0 for every image: p_fake 0.5, which the model alone sends to review."""

    def infer(self, images: np.ndarray) -> InferenceResult:
        return InferenceResult(np.zeros(len(images), np.float32), "deepfake_detector", "7")


@pytest.fixture()
def env(worker_env: WorkerEnv, tmp_path: Path) -> WorkerEnv:
    return with_stub_version(worker_env, tmp_path, temperature=1.0)


def _bank(env: WorkerEnv, verdict: str, data: bytes, *, tenant: str | None = None) -> str:
    with session_scope(env.session_factory) as s:
        bank = banks.create_bank(
            session=s, name=f"{verdict}-{uuid.uuid4().hex[:6]}", verdict=verdict, tenant=tenant
        )
        banks.add_entry(
            session=s, bank_id=bank.id, media=bytes_pdq(data), source="file", added_by="ops"
        )
        return bank.name


def _score(env: WorkerEnv, data: bytes) -> tuple[str, Verdict]:
    sub_id = env.submission(blob_sha256=env.blobs.put(data))
    matcher = BankMatcher(session_factory=env.session_factory)
    result = scoring.score_submission(
        submission_id=sub_id,
        session_factory=env.session_factory,
        blobs=env.blobs,
        client=StubClient(),  # type: ignore[arg-type]
        settings=env.settings,
        matcher=matcher,
    )
    assert result.outcome == scoring.Outcome.SCORED
    with session_scope(env.session_factory) as s:
        verdict = s.query(Verdict).filter_by(submission_id=sub_id).one()
        s.expunge(verdict)
    return sub_id, verdict


def test_fake_bank_match_flags_and_names_the_bank(env: WorkerEnv) -> None:
    image = photo(101)
    name = _bank(env, "fake", jpeg(image, 95), tenant=env.tenant_id)
    sub_id, verdict = _score(env, reupload(image, quality=60, scale=0.7))
    assert verdict.decision == "auto_flagged" and verdict.decision_reason == "bank_match:fake"
    assert verdict.signals is not None
    assert verdict.signals["model"]["decision"] == "needs_review"
    match = verdict.signals["match"]
    assert match["bank"] == name and match["verdict"] == "fake" and match["distance"] <= 31
    assert match["origin"]["source"] == "file" and match["origin"]["added_by"] == "ops"
    with session_scope(env.session_factory) as s:
        stored = s.get(MediaHashRow, sub_id)
        assert stored is not None and stored.signal_type == "pdq" and stored.quality >= 50
        view = get_submission(session=s, submission_id=sub_id, tenant_id=None)
    assert view is not None
    body = view.to_json()["verdict"]
    assert body["status" if False else "decision"] == "auto_flagged"
    assert body["decision_reason"] == "bank_match:fake"
    assert body["signals"]["match"]["bank"] == name and body["signals"]["provenance"] is None
    assert body["signals"]["model"]["p_fake"] == pytest.approx(0.5)


def test_real_bank_match_passes(env: WorkerEnv) -> None:
    image = photo(102)
    _bank(env, "real", jpeg(image), tenant=env.tenant_id)
    _sub, verdict = _score(env, reupload(image))
    assert (verdict.decision, verdict.decision_reason) == ("auto_passed", "bank_match:real")


@pytest.mark.parametrize(
    ("on_fake", "decision", "reason"),
    [("review", "needs_review", "bank_match:fake"), ("ignore", "needs_review", "model")],
)
def test_tenant_policy_changes_what_a_match_does(
    env: WorkerEnv, on_fake: str, decision: str, reason: str
) -> None:
    image = photo(103)
    _bank(env, "fake", jpeg(image), tenant=env.tenant_id)
    with session_scope(env.session_factory) as s:
        banks.set_policy(session=s, tenant=env.tenant_id, on_fake=on_fake)
    _sub, verdict = _score(env, reupload(image))
    assert (verdict.decision, verdict.decision_reason) == (decision, reason)
    assert verdict.signals is not None and verdict.signals["match"]["verdict"] == "fake"


def test_no_match_is_the_models_decision(env: WorkerEnv) -> None:
    _bank(env, "fake", jpeg(photo(104)))
    _sub, verdict = _score(env, jpeg(photo(105)))
    assert (verdict.decision, verdict.decision_reason) == ("needs_review", "model")
    assert verdict.signals is not None and verdict.signals["match"] is None


def test_video_matches_by_share_of_frames(env: WorkerEnv) -> None:
    from tests.video.media import encode

    pictures = [np.asarray(photo(110 + i, 160)) for i in range(4)]
    frames = [p for p in pictures for _ in range(10)]  # 4 s at 10 fps, a new scene each second
    original = encode(frames, fps=10)
    media = video_hash(original, max_seconds=60)
    assert media is not None and len(media.frames) == 4
    with session_scope(env.session_factory) as s:
        bank = banks.create_bank(session=s, name=f"v-{uuid.uuid4().hex[:6]}", verdict="fake")
        banks.add_entry(session=s, bank_id=bank.id, media=media, source="file")
    smaller = [np.asarray(photo(110 + i, 160).resize((112, 112))) for i in range(4)]
    _sub, verdict = _score(env, encode([p for p in smaller for _ in range(10)], fps=10))
    assert verdict.decision_reason == "bank_match:fake"
    assert verdict.signals is not None
    assert verdict.signals["match"]["signal_type"] == "vpdq"
    assert verdict.signals["match"]["frame_share"] == 1.0


def test_openapi_document_describes_the_verdict_with_a_match(env: WorkerEnv) -> None:
    from webhook_api.openapi import document

    image = photo(106)
    _bank(env, "fake", jpeg(image), tenant=env.tenant_id)
    sub_id, _verdict = _score(env, reupload(image))
    with session_scope(env.session_factory) as s:
        view = get_submission(session=s, submission_id=sub_id, tenant_id=None)
    assert view is not None
    verdict = view.to_json()["verdict"]
    import jsonschema_rs

    doc = document()
    schemas = doc["components"]["schemas"]
    jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/VerdictOut", "components": doc["components"]}
    ).validate(verdict)
    match_schema = schemas["BankMatch"]["properties"]
    assert set(verdict["signals"]["match"]) <= set(match_schema)
    assert set(verdict["signals"]["match"]["origin"]) <= set(schemas["BankOrigin"]["properties"])
    assert verdict["signals"]["match"]["verdict"] == "fake"
