"""A verdict's first callback attempt, claimed by the write that stores the verdict.

The score task reserves an idle dispatch thread first (worker.tasks); the outbox row is then
written as a claim leaves it, and that thread sends without a claim statement. The row must be
sent once, with the body a claim would read, and recovered like any claimed attempt when the
process dies before sending. On both databases (the PostgreSQL write is one statement).
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from sqlalchemy import event, select

from moderation.db import session_scope
from moderation.models import CallbackDelivery, DeliveryStatus, utcnow
from tests.fixtures.media import flat_image
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.worker import StubClient, WorkerEnv, delivery_row, score
from worker import callbacks, scoring, sweeper
from worker.celery_app import create_celery
from worker.deps import deps_for
from worker.enqueue import TASK_SCORE
from worker.tasks import register_tasks


def _scored(env: WorkerEnv, url: str, lease_s: float | None) -> scoring.ScoreResult:
    sub_id = env.submission(blob_sha256=env.blobs.put(flat_image((64, 48))), callback_url=url)
    result = score(env, sub_id, StubClient(logit=2.0), callback_lease_s=lease_s)
    assert result.outcome is scoring.Outcome.SCORED and result.delivery_id is not None
    return result


def _deliver(env: WorkerEnv, delivery_id: str) -> callbacks.DeliveryResult:
    return callbacks.deliver(
        delivery_id=delivery_id, session_factory=env.session_factory, settings=env.settings
    )


def _due(env: WorkerEnv, at: dt.datetime) -> list[str]:
    return sweeper.due_deliveries(
        session_factory=env.session_factory, settings=env.settings, now=at
    )


def _naive(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=None) if value.tzinfo else value


def test_claimed_by_the_verdicts_write__sent_once_with_the_body_a_claim_reads(
    scoring_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    lease_s = callbacks.attempt_lease_s(scoring_env.settings)
    result = _scored(scoring_env, receiver.url(), lease_s)
    attempt = result.attempt
    assert attempt is not None and result.delivery_id is not None
    assert (attempt.delivery_id, attempt.number, attempt.url) == (
        result.delivery_id,
        1,
        receiver.url(),
    )
    row = delivery_row(scoring_env, result.delivery_id)
    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 1)
    assert row.next_attempt_at is not None
    held = _naive(row.next_attempt_at) - _naive(row.created_at)
    assert held.total_seconds() == pytest.approx(lease_s, abs=0.01)
    assert attempt.body == json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
    # Leased: neither a delivery task nor the sweeper sends it meanwhile.
    assert _deliver(scoring_env, result.delivery_id).status == "skipped"
    assert result.delivery_id not in _due(scoring_env, utcnow())

    sent = callbacks.deliver_claimed(
        attempt, session_factory=scoring_env.session_factory, settings=scoring_env.settings
    )
    assert sent.status == DeliveryStatus.DELIVERED
    (got,) = receiver.wait_for(1)
    assert got.signature_ok and got.headers["webhook-id"] == result.delivery_id
    assert got.body == attempt.body
    assert got.json()["data"]["status"] == result.status
    row = delivery_row(scoring_env, result.delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)


def test_without_a_reserved_thread__the_row_is_due_and_no_attempt_is_claimed(
    scoring_env: WorkerEnv,
) -> None:
    result = _scored(scoring_env, "http://127.0.0.1:9/hook", None)
    assert result.attempt is None and result.delivery_id is not None
    row = delivery_row(scoring_env, result.delivery_id)
    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
    assert row.next_attempt_at == row.created_at


def test_lost_before_sending__the_sweeper_sends_it_as_attempt_two_once_the_lease_lapses(
    scoring_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    lease_s = callbacks.attempt_lease_s(scoring_env.settings)
    result = _scored(scoring_env, receiver.url(), lease_s)
    assert result.attempt is not None and result.delivery_id is not None
    # The process died with the attempt unsent: after the lease the row is due again.
    lapsed = utcnow() + dt.timedelta(seconds=lease_s + 1)
    assert result.delivery_id in _due(scoring_env, lapsed)
    with session_scope(scoring_env.session_factory) as session:
        row = session.get(CallbackDelivery, result.delivery_id)
        assert row is not None
        row.next_attempt_at = utcnow()  # as if the lease had run out
    resent = _deliver(scoring_env, result.delivery_id)
    assert resent.status == DeliveryStatus.DELIVERED
    (got,) = receiver.wait_for(1)
    assert got.signature_ok and got.headers["webhook-id"] == result.delivery_id
    assert delivery_row(scoring_env, result.delivery_id).attempts == 2


def test_the_score_task_sends_the_first_attempt_from_its_reserved_thread(
    scoring_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    sub_id = scoring_env.submission(
        blob_sha256=scoring_env.blobs.put(flat_image((64, 48))), callback_url=receiver.url()
    )
    settings = scoring_env.settings.replace(callback_dispatch_threads=1)
    deps = deps_for(settings)
    deps._client = StubClient(logit=2.0)  # type: ignore[assignment]
    updates: list[str] = []  # the worker's statements that change an outbox row

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE CALLBACK_DELIVERIES"):
            updates.append(statement)

    engine = deps.session_factory.kw["bind"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        app = register_tasks(create_celery(settings))
        assert app.tasks[TASK_SCORE].apply(args=[sub_id]).result == scoring.Outcome.SCORED.value
        (got,) = receiver.wait_for(1)
        assert got.signature_ok and got.json()["data"]["id"] == sub_id
        with session_scope(scoring_env.session_factory) as session:
            (delivery_id,) = session.scalars(
                select(CallbackDelivery.id).where(CallbackDelivery.submission_id == sub_id)
            ).all()
        deadline = time.monotonic() + 10  # the record follows the receiver's answer
        while delivery_row(scoring_env, delivery_id).status != DeliveryStatus.DELIVERED:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # The record of the outcome only: the verdict's write made the claim.
    assert len(updates) == 1 and "delivered_at" in updates[0]
    assert delivery_row(scoring_env, delivery_id).attempts == 1
