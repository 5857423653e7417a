"""The sweeper: stuck submissions are re-enqueued, due deliveries found, hopeless jobs ended."""

from __future__ import annotations

import datetime as dt

from moderation.db import session_scope
from moderation.models import CallbackDelivery, MediaKind, Status, Submission, utcnow
from tests.fixtures.worker import WorkerEnv, submission_row
from worker import sweeper


def _age(env: WorkerEnv, sub_id: str, seconds: float) -> None:
    with session_scope(env.session_factory) as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        sub.updated_at = utcnow() - dt.timedelta(seconds=seconds)


def _sweep(env: WorkerEnv) -> sweeper.SweepResult:
    return sweeper.sweep(session_factory=env.session_factory, settings=env.settings)


def test_sweep__reenqueues_stuck_submissions_once(worker_env: WorkerEnv) -> None:
    stuck_after = worker_env.settings.stuck_after_s
    upload = worker_env.submission(status=Status.SCORING, blob_sha256="a" * 64)
    url = worker_env.submission(
        media_kind=MediaKind.URL, media_url="http://x/a.png", status=Status.RECEIVED
    )
    fresh = worker_env.submission(status=Status.QUEUED)
    done = worker_env.submission(status=Status.AUTO_PASSED)
    for sub_id in (upload, url, done):
        _age(worker_env, sub_id, stuck_after + 5)
    result = _sweep(worker_env)
    assert upload in result.score and url in result.fetch
    assert fresh not in result.score + result.fetch and done not in result.score + result.fetch
    again = _sweep(worker_env)  # touched: not picked again until stuck_after_s passes
    assert upload not in again.score and url not in again.fetch


def test_sweep__gives_up_after_max_attempts(worker_env: WorkerEnv) -> None:
    limit = sweeper.max_attempts(worker_env.settings)
    sub_id = worker_env.submission(
        status=Status.SCORING, attempts=limit, callback_url="http://127.0.0.1:9/hook"
    )
    _age(worker_env, sub_id, worker_env.settings.stuck_after_s + 5)
    result = _sweep(worker_env)
    assert result.gave_up == [sub_id]
    sub = submission_row(worker_env, sub_id)
    assert (sub.status, sub.failure_reason) == (Status.FAILED, "internal_error")
    assert len(result.deliver) >= 1  # the submission.failed callback is due at once


def test_sweep__finds_due_deliveries_only(worker_env: WorkerEnv) -> None:
    sub_id = worker_env.submission(status=Status.AUTO_PASSED)
    now = utcnow()
    interval = dt.timedelta(seconds=worker_env.settings.sweep_interval_s)
    second = dt.timedelta(seconds=1)
    rows = {
        # Never attempted and due for longer than a sweep interval: its hand-over was lost.
        "due": CallbackDelivery(next_attempt_at=now - interval - second),
        # Never attempted, due just now: its first attempt is on its way; a sweep would duplicate.
        "fresh": CallbackDelivery(next_attempt_at=now - second),
        # Attempted before and due again: a retry, possibly one only the sweeper schedules.
        "retry": CallbackDelivery(attempts=1, next_attempt_at=now - second),
        "later": CallbackDelivery(next_attempt_at=now + dt.timedelta(hours=2)),
        "dead": CallbackDelivery(status="dead", next_attempt_at=None),
    }
    ids = {}
    with session_scope(worker_env.session_factory) as session:
        for name, row in rows.items():
            row.submission_id, row.tenant_id, row.event_type = sub_id, worker_env.tenant_id, name
            row.url, row.payload = "http://127.0.0.1:9/hook", {}
            session.add(row)
            session.flush()
            ids[name] = row.id
    result = _sweep(worker_env)
    assert ids["due"] in result.deliver and ids["retry"] in result.deliver
    assert not {ids["fresh"], ids["later"], ids["dead"]} & set(result.deliver)
