"""Callback delivery against a real HTTP receiver on 127.0.0.1 that checks signatures."""

from __future__ import annotations

import datetime as dt
import time

from moderation.api_schema import EVENT_SCORED
from moderation.db import session_scope
from moderation.models import CallbackDelivery, DeliveryStatus, Submission, utcnow
from moderation.outbox import add_outbox, replay
from moderation.submissions import submission_view
from tests.fixtures.receiver import Answer, CallbackReceiver
from tests.fixtures.worker import WorkerEnv, delivery_row
from worker import callbacks


def _delivery(env: WorkerEnv, url: str) -> str:
    sub_id = env.submission(callback_url=url, external_id="ext-1", status="auto_passed")
    with session_scope(env.session_factory) as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        row = add_outbox(session, view=submission_view(sub), event_type=EVENT_SCORED)
        assert row is not None
        return row


def _make_due(env: WorkerEnv, delivery_id: str) -> None:
    with session_scope(env.session_factory) as session:
        row = session.get(CallbackDelivery, delivery_id)
        assert row is not None
        row.next_attempt_at = utcnow()


def test_deliver__signed_standard_webhook(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    delivery_id = _delivery(worker_env, receiver.url())
    result = callbacks.deliver(
        delivery_id=delivery_id,
        session_factory=worker_env.session_factory,
        settings=worker_env.settings,
    )
    assert result.status == DeliveryStatus.DELIVERED
    (got,) = receiver.wait_for(1)
    assert got.signature_ok
    assert got.headers["webhook-id"] == delivery_id
    assert got.headers["content-type"] == "application/json"
    assert got.json()["type"] == "submission.scored"
    assert got.json()["data"]["external_id"] == "ext-1"
    row = delivery_row(worker_env, delivery_id)
    assert (row.attempts, row.last_status_code, row.delivered_at is not None) == (1, 200, True)


def test_deliver__retry_schedule_keeps_webhook_id(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    receiver.program(500)
    delivery_id = _delivery(worker_env, receiver.url())
    deps = {"session_factory": worker_env.session_factory, "settings": worker_env.settings}
    first = callbacks.deliver(delivery_id=delivery_id, **deps)
    assert first.status == DeliveryStatus.PENDING
    assert first.retry_in_s == worker_env.settings.callback_delays[1] == 5.0
    row = delivery_row(worker_env, delivery_id)
    assert (
        row.attempts == 1
        and row.last_status_code == 500
        and "expected a 2xx" in (row.last_error or "")
    )
    assert row.next_attempt_at is not None
    assert row.next_attempt_at - utcnow() > dt.timedelta(seconds=3)
    # Not due yet: a duplicate task (or the sweeper) sends nothing.
    assert not callbacks.deliver(delivery_id=delivery_id, **deps).attempted
    _make_due(worker_env, delivery_id)
    assert callbacks.deliver(delivery_id=delivery_id, **deps).status == DeliveryStatus.DELIVERED
    first_req, second_req = receiver.wait_for(2)
    assert first_req.headers["webhook-id"] == second_req.headers["webhook-id"] == delivery_id
    assert first_req.signature_ok and second_req.signature_ok


def test_deliver__dead_after_last_attempt(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    receiver.program(default=503)
    settings = worker_env.settings.replace(callback_schedule="0,0,0")
    delivery_id = _delivery(worker_env, receiver.url())
    deps = {"session_factory": worker_env.session_factory, "settings": settings}
    statuses = []
    for _ in range(3):
        _make_due(worker_env, delivery_id)
        statuses.append(callbacks.deliver(delivery_id=delivery_id, **deps).status)
    assert statuses == ["pending", "pending", "dead"]
    row = delivery_row(worker_env, delivery_id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("dead", 3, None)
    _make_due(worker_env, delivery_id)
    assert not callbacks.deliver(delivery_id=delivery_id, **deps).attempted
    assert len(receiver.received) == 3


def test_deliver__redirect_is_failure(worker_env: WorkerEnv, receiver: CallbackReceiver) -> None:
    receiver.program(Answer(307, location=receiver.url("/elsewhere")))
    delivery_id = _delivery(worker_env, receiver.url())
    result = callbacks.deliver(
        delivery_id=delivery_id,
        session_factory=worker_env.session_factory,
        settings=worker_env.settings,
    )
    assert result.status == DeliveryStatus.PENDING
    assert [r.path for r in receiver.received] == ["/hook"]
    row = delivery_row(worker_env, delivery_id)
    assert row.last_status_code == 307 and "redirect not followed" in (row.last_error or "")


def test_deliver__slow_receiver_times_out(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    receiver.program(Answer(200, delay_s=4.0))
    delivery_id = _delivery(worker_env, receiver.url())
    started = time.monotonic()
    result = callbacks.deliver(
        delivery_id=delivery_id,
        session_factory=worker_env.session_factory,
        settings=worker_env.settings,
    )
    assert time.monotonic() - started < 3.5  # callback_timeout_s is 1 s; the receiver needs 4 s
    assert result.status == DeliveryStatus.PENDING
    row = delivery_row(worker_env, delivery_id)
    assert row.last_status_code is None and "within 1s" in (row.last_error or "")


def test_deliver__ssrf_guard_blocks_loopback(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    settings = worker_env.settings.replace(outbound_allowlist="")
    delivery_id = _delivery(worker_env, receiver.url())
    result = callbacks.deliver(
        delivery_id=delivery_id, session_factory=worker_env.session_factory, settings=settings
    )
    assert result.status == DeliveryStatus.PENDING
    assert receiver.received == []
    assert "SSRF" in (delivery_row(worker_env, delivery_id).last_error or "")


def test_retry_delay__schedule_and_end() -> None:
    delays = (0.0, 5.0, 300.0)
    assert callbacks.retry_delay(attempts_done=1, delays=delays) == 5.0
    jittered = callbacks.retry_delay(attempts_done=2, delays=delays)
    assert jittered is not None and 300.0 <= jittered <= 330.0
    assert callbacks.retry_delay(attempts_done=3, delays=delays) is None


def test_replay__dead_delivery_gets_one_more_attempt(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    receiver.program(500)
    settings = worker_env.settings.replace(callback_schedule="0")
    delivery_id = _delivery(worker_env, receiver.url())
    deps = {"session_factory": worker_env.session_factory, "settings": settings}
    assert callbacks.deliver(delivery_id=delivery_id, **deps).status == DeliveryStatus.DEAD
    assert replay(delivery_id=delivery_id, session_factory=worker_env.session_factory)
    assert callbacks.deliver(delivery_id=delivery_id, **deps).status == DeliveryStatus.DELIVERED
    first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery_id
    assert not replay(delivery_id="msg_missing", session_factory=worker_env.session_factory)
