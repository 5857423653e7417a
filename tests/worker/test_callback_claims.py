"""Claims and records of callback attempts on SQLite and PostgreSQL, with a real receiver.

Two workers racing for one due row send it once; the late record of an attempt whose lease a newer
attempt took over changes nothing; a rotated tenant's callbacks carry both secrets' signatures
until the overlap ends; the ``callback_queue`` wait is observed on first attempts only.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from moderation.api_schema import EVENT_SCORED
from moderation.db import make_engine, make_session_factory, session_scope
from moderation.models import (
    CallbackDelivery,
    DeliveryStatus,
    MediaKind,
    Status,
    Submission,
    utcnow,
)
from moderation.outbox import add_outbox
from moderation.settings import Settings
from moderation.submissions import submission_view
from moderation.tenants import rotate_secret
from tests.fixtures.database import create_test_tenant
from tests.fixtures.receiver import CallbackReceiver, Received, standard_webhooks_signature
from tests.fixtures.worker import worker_settings
from worker import callbacks

RACES = 8


@dataclass
class Env:
    url: str
    settings: Settings
    session_factory: sessionmaker[Session]
    tenant_name: str
    tenant_id: str
    secret: str

    def delivery(self, callback_url: str) -> str:
        """Returns the id of a new due outbox row for a new scored submission."""
        with session_scope(self.session_factory) as session:
            sub = Submission(
                tenant_id=self.tenant_id,
                media_kind=MediaKind.UPLOAD,
                status=Status.AUTO_PASSED,
                callback_url=callback_url,
            )
            session.add(sub)
            session.flush()
            row = add_outbox(
                session,
                view=submission_view(sub),
                event_type=EVENT_SCORED,
            )
            assert row is not None
            return row

    def row(self, delivery_id: str) -> CallbackDelivery:
        with session_scope(self.session_factory) as session:
            row = session.get(CallbackDelivery, delivery_id)
            assert row is not None, f"expected outbox row {delivery_id}"
            return row

    def make_due(self, delivery_id: str) -> None:
        """Ends the row's lease, as if the worker holding it had died."""
        with session_scope(self.session_factory) as session:
            row = session.get(CallbackDelivery, delivery_id)
            assert row is not None
            row.next_attempt_at = utcnow()


@pytest.fixture()
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    url = database_url
    name = f"tenant-{uuid.uuid4().hex[:8]}"
    tenant_id, _key, secret = create_test_tenant(url, name=name)
    settings = worker_settings(url, tmp_path)
    engine = make_engine(url)
    yield Env(url, settings, make_session_factory(engine), name, tenant_id, secret)
    engine.dispose()


@pytest.fixture()
def receiver(env: Env) -> Iterator[CallbackReceiver]:
    with CallbackReceiver(secret=env.secret) as server:
        yield server


def _race(env: Env, delivery_id: str) -> list[callbacks.DeliveryResult]:
    """Returns the results of two deliver() calls started together, each with its own engine."""
    engines = [make_engine(env.url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[callbacks.DeliveryResult] = []
    errors: list[BaseException] = []

    def attempt(factory: sessionmaker[Session]) -> None:
        try:
            barrier.wait(timeout=10)
            result = callbacks.deliver(
                delivery_id=delivery_id, session_factory=factory, settings=env.settings
            )
            results.append(result)
        except BaseException as exc:  # reported below, with what was expected
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(make_session_factory(e),)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for engine in engines:
        engine.dispose()
    assert not errors, f"expected both deliver() calls to return, got {errors!r}"
    return results


def test_deliver__concurrent_claims_send_once(env: Env, receiver: CallbackReceiver) -> None:
    ids = [env.delivery(receiver.url()) for _ in range(RACES)]
    for delivery_id in ids:
        results = _race(env, delivery_id)
        attempted = [r for r in results if r.attempted]
        assert len(results) == 2 and len(attempted) == 1, (
            f"expected exactly one of two racing claims to win, got {results}"
        )
        assert attempted[0].status == DeliveryStatus.DELIVERED
        assert env.row(delivery_id).attempts == 1
    got = receiver.wait_for(RACES)
    assert sorted(g.headers["webhook-id"] for g in got) == sorted(ids)
    assert all(g.signature_ok for g in got)


def test_claim__not_due_or_leased_row_is_skipped(env: Env, receiver: CallbackReceiver) -> None:
    delivery_id = env.delivery(receiver.url())
    lease_s = env.settings.callback_timeout_s + callbacks.LEASE_MARGIN_S
    first = callbacks._claim(env.session_factory, delivery_id, lease_s)
    assert first is not None and first.number == 1
    assert callbacks._claim(env.session_factory, delivery_id, lease_s) is None
    assert callbacks._claim(env.session_factory, "msg_missing", lease_s) is None
    row = env.row(delivery_id)
    assert row.attempts == 1 and row.next_attempt_at is not None
    assert row.next_attempt_at > utcnow() + callbacks._DUE_SLACK


def test_record__stale_attempt_does_not_overwrite(env: Env, receiver: CallbackReceiver) -> None:
    delivery_id = env.delivery(receiver.url())
    lease_s = env.settings.callback_timeout_s + callbacks.LEASE_MARGIN_S
    first = callbacks._claim(env.session_factory, delivery_id, lease_s)
    assert first is not None
    env.make_due(delivery_id)  # the first worker's lease ran out
    second = callbacks._claim(env.session_factory, delivery_id, lease_s)
    assert second is not None and (first.number, second.number) == (1, 2)
    late = callbacks._record(env.session_factory, first, 200, None, env.settings)
    assert late == callbacks.DeliveryResult(DeliveryStatus.PENDING, attempted=True)
    row = env.row(delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.delivered_at) == (
        DeliveryStatus.PENDING,
        2,
        None,
        None,
    ), "expected the late record of attempt 1 to leave attempt 2's row alone"
    failed = callbacks._record(env.session_factory, second, 500, "HTTP 500", env.settings)
    assert failed.status == DeliveryStatus.PENDING and failed.retry_in_s is not None
    row = env.row(delivery_id)
    assert (row.attempts, row.last_status_code, row.last_error) == (2, 500, "HTTP 500")
    assert row.next_attempt_at is not None and row.next_attempt_at > utcnow()


def test_deliver__rotated_secret_signs_until_overlap_ends(
    env: Env, receiver: CallbackReceiver
) -> None:
    with session_scope(env.session_factory) as session:
        new = rotate_secret(session=session, name=env.tenant_name, overlap_hours=1.0)
    deps: dict[str, Any] = {"session_factory": env.session_factory, "settings": env.settings}
    assert callbacks.deliver(delivery_id=env.delivery(receiver.url()), **deps).attempted
    with session_scope(env.session_factory) as session:
        newer = rotate_secret(session=session, name=env.tenant_name, overlap_hours=0.0)
    assert callbacks.deliver(delivery_id=env.delivery(receiver.url()), **deps).attempted
    during, after = receiver.wait_for(2)
    assert during.signature_ok, "expected the previous secret to still sign during the overlap"
    assert len(during.headers["webhook-signature"].split()) == 2
    assert _signed_by(new, during)
    assert not after.signature_ok and len(after.headers["webhook-signature"].split()) == 1
    assert _signed_by(newer, after)


def _signed_by(secret: str, got: Received) -> bool:
    headers = got.headers
    expected = standard_webhooks_signature(
        secret, headers["webhook-id"], headers["webhook-timestamp"], got.body
    )
    return expected in headers["webhook-signature"].split()


def _queue_waits() -> tuple[float, float]:
    labels = {"stage": "callback_queue"}
    count = REGISTRY.get_sample_value("dfmod_worker_stage_seconds_count", labels)
    total = REGISTRY.get_sample_value("dfmod_worker_stage_seconds_sum", labels)
    return count or 0.0, total or 0.0


def test_deliver__queue_wait_observed_on_first_attempt_only(
    env: Env, receiver: CallbackReceiver
) -> None:
    receiver.program(500)
    delivery_id = env.delivery(receiver.url())
    with session_scope(env.session_factory) as session:  # due for a while already
        row = session.get(CallbackDelivery, delivery_id)
        assert row is not None
        row.created_at = row.next_attempt_at = utcnow() - dt.timedelta(seconds=5)
    deps: dict[str, Any] = {"session_factory": env.session_factory, "settings": env.settings}
    count, total = _queue_waits()
    assert callbacks.deliver(delivery_id=delivery_id, **deps).status == DeliveryStatus.PENDING
    after_first = _queue_waits()
    assert after_first[0] == count + 1 and after_first[1] - total >= 5.0, (
        f"expected one callback_queue wait of at least 5 s, got {after_first} from {(count, total)}"
    )
    env.make_due(delivery_id)
    assert callbacks.deliver(delivery_id=delivery_id, **deps).status == DeliveryStatus.DELIVERED
    assert _queue_waits() == after_first, "expected no callback_queue wait for a retry"
