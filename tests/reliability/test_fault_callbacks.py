"""Callback receivers that fail: 500s, timeouts, refused connections, redirects, a slow receiver.

The worker runs a short schedule (``DFMOD_CALLBACK_SCHEDULE=0,1,2``: three attempts, then dead) and
a 1 s receiver timeout. Each failing receiver sees the attempts on that schedule with one
``webhook-id``; the row ends ``dead``; :func:`moderation.outbox.replay` makes it due again and the
sweeper delivers it. A receiver that never answers costs each attempt only the timeout, so another
tenant's callbacks still go out promptly.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from moderation.db import make_engine, make_session_factory
from moderation.models import CallbackDelivery
from moderation.outbox import replay
from tests.fixtures.receiver import Answer, CallbackReceiver
from tests.fixtures.stack import (
    FAULT_ENV,
    Stack,
    closed_port,
    embedded_stack,
    submit_many,
    triton_env,
)

pytestmark = pytest.mark.integration

SCHEDULE = (0.0, 1.0, 2.0)
TIMEOUT_S = 1.0
ENV = {
    **FAULT_ENV,
    "DFMOD_CALLBACK_SCHEDULE": ",".join(str(s) for s in SCHEDULE),
    "DFMOD_CALLBACK_TIMEOUT_S": str(TIMEOUT_S),
}


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**triton_env(triton_server), **ENV}
    with embedded_stack(tmp_path_factory.mktemp("fault-callbacks"), env) as started:
        yield started


def delivery_of(stack: Stack, submission_id: str) -> CallbackDelivery | None:
    with stack.session() as session:
        query = select(CallbackDelivery).where(CallbackDelivery.submission_id == submission_id)
        rows = session.scalars(query).all()
        assert len(rows) <= 1, rows
        for row in rows:
            session.expunge(row)
        return rows[0] if rows else None


def wait_delivery(stack: Stack, submission_id: str, status: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = delivery_of(stack, submission_id)
        if row is not None and row.status == status:
            return row
        time.sleep(0.3)
    raise AssertionError(f"delivery of {submission_id} not {status}\n{stack.log_tail()}")


def replay_now(stack: Stack, delivery_id: str) -> None:
    engine = make_engine(stack.database_url)
    try:
        assert replay(delivery_id=delivery_id, session_factory=make_session_factory(engine))
    finally:
        engine.dispose()


FAILING = {
    "http_500": Answer(500),
    "timeout": Answer(200, delay_s=TIMEOUT_S + 1.5),
    "redirect": Answer(302, location="/elsewhere"),
}


@pytest.mark.parametrize("case", list(FAILING))
def test_failing_receiver__schedule_then_dead__replay_delivers(
    stack: Stack, callback_receiver: CallbackReceiver, case: str
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    callback_receiver.program(default=FAILING[case])
    (submission_id,) = submit_many(stack, tenant.api_key, 1, callback_url=callback_receiver.url())
    attempts = callback_receiver.wait_for(len(SCHEDULE), path="/hook", timeout_s=40)
    row = wait_delivery(stack, submission_id, "dead", timeout_s=20)
    assert row.attempts == len(SCHEDULE) and row.last_error
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert all(a.signature_ok for a in attempts)
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(attempts)]
    for gap, scheduled in zip(gaps, SCHEDULE[1:], strict=True):
        # the wait starts once the attempt ended: a timed-out attempt adds its timeout
        assert scheduled - 0.2 <= gap <= scheduled + TIMEOUT_S + 3.0, (gaps, SCHEDULE)
    assert not [r for r in callback_receiver.received if r.path == "/elsewhere"]
    callback_receiver.program(default=Answer(200))
    replay_now(stack, row.id)
    wait_delivery(stack, submission_id, "delivered", timeout_s=20)
    last = callback_receiver.received[-1]
    assert last.answered == 200 and last.headers["webhook-id"] == row.id
    print(f"\n{case}: attempt gaps {[round(g, 2) for g in gaps]} s for schedule {SCHEDULE}")


def test_connection_refused__dead_after_schedule(stack: Stack) -> None:
    tenant = stack.tenant()
    url = f"http://127.0.0.1:{closed_port()}/hook"
    (submission_id,) = submit_many(stack, tenant.api_key, 1, callback_url=url)
    row = wait_delivery(stack, submission_id, "dead", timeout_s=40)
    assert row.attempts == len(SCHEDULE)
    assert row.last_status_code is None and row.last_error


def test_slow_receiver__other_tenant_not_stalled(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    with CallbackReceiver() as slow:
        slow.program(default=Answer(200, delay_s=30.0))
        stuck_tenant, tenant = stack.tenant(), stack.tenant()
        callback_receiver.secret = tenant.secret
        submit_many(stack, stuck_tenant.api_key, 4, callback_url=slow.url())
        started = time.monotonic()
        ids = submit_many(stack, tenant.api_key, 2, callback_url=callback_receiver.url())
        got = callback_receiver.wait_for(2, timeout_s=20)
        latency = time.monotonic() - started
        assert {g.json()["data"]["id"] for g in got} == set(ids)
        assert slow.received, "the slow receiver was never tried; the test proves nothing"
        print(f"\nslow receiver: other tenant's 2 callbacks arrived in {latency:.1f}s")
