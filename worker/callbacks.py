"""Signed callbacks: delivery of the outbox rows (:mod:`moderation.outbox`) with retries.

Standard Webhooks headers; only a 2xx within ``callback_timeout_s`` succeeds; retries follow
``settings.callback_delays``, then the row is ``dead``. Each attempt claims its row with one
conditional update, so no attempt is sent twice (docs/design.md, "Workers").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from moderation import signing
from moderation.db import session_scope
from moderation.models import CallbackDelivery, DeliveryStatus, Tenant, utcnow
from moderation.settings import Settings
from moderation.tenants import signing_secrets
from worker import outbound
from worker.metrics import observe_since, stage

logger = logging.getLogger(__name__)

# A claimed attempt holds its row this long beyond the request timeout before the sweeper may retry.
# It must exceed DUE_SLACK_S, or a second claim would find a just-claimed row still due.
LEASE_MARGIN_S = 30.0
# A task may run this early (clock skew between the scheduler and the worker).
DUE_SLACK_S = 1.0
# Waits up to this long are scheduled as a task countdown; longer ones are left to the sweeper.
MAX_COUNTDOWN_S = 600.0
# Longer waits get up to this fraction of random jitter so retries of many rows spread out.
JITTER_FRACTION = 0.1
JITTER_FROM_S = 60.0
MAX_ERROR_CHARS = 500

_DUE_SLACK = dt.timedelta(seconds=DUE_SLACK_S)

# The statements of an attempt, built once (Core, no ORM objects): the claim, which also returns
# the tenant's secrets, and the record of each outcome, conditional on the attempt it claimed.
_DELIVERIES: Table = CallbackDelivery.__table__  # type: ignore[assignment]
_TENANTS: Table = Tenant.__table__  # type: ignore[assignment]
_d = _DELIVERIES.c
_CLAIM = (
    update(_DELIVERIES)
    .where(
        _d.id == bindparam("delivery_id"),
        _d.status == DeliveryStatus.PENDING,
        or_(_d.next_attempt_at.is_(None), _d.next_attempt_at <= bindparam("due_by")),
    )
    .values(attempts=_d.attempts + 1, next_attempt_at=bindparam("lease_until"))
    .returning(
        _d.url,
        _d.payload,
        _d.attempts,
        _d.created_at,
        # The tenant's signing secrets, read by the same statement (NULL without a tenant).
        *(
            select(column).where(_TENANTS.c.id == _d.tenant_id).scalar_subquery()
            for column in (
                _TENANTS.c.webhook_secret,
                _TENANTS.c.previous_webhook_secret,
                _TENANTS.c.previous_secret_expires_at,
            )
        ),
    )
)
_CLAIMED = (
    update(_DELIVERIES)
    .where(_d.id == bindparam("delivery_id"), _d.attempts == bindparam("number"))
    .values(last_status_code=bindparam("code"), last_error=bindparam("error"))
)
_RECORD = {
    DeliveryStatus.DELIVERED: _CLAIMED.values(
        status=DeliveryStatus.DELIVERED, delivered_at=bindparam("now"), next_attempt_at=None
    ),
    DeliveryStatus.PENDING: _CLAIMED.values(next_attempt_at=bindparam("retry_at")),
    DeliveryStatus.DEAD: _CLAIMED.values(status=DeliveryStatus.DEAD, next_attempt_at=None),
}
_STATUS = select(_d.status).where(_d.id == bindparam("delivery_id"))


@dataclass(frozen=True)
class Attempt:
    """What a claimed delivery attempt needs, copied out of the session."""

    delivery_id: str
    url: str
    secrets: tuple[str, ...]  # the current secret, plus the previous one during a rotation
    body: bytes
    number: int  # 1-based


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of :func:`deliver`: the row's status and when to try again."""

    status: str
    attempted: bool
    retry_in_s: float | None = None


def retry_delay(*, attempts_done: int, delays: tuple[float, ...]) -> float | None:
    """Returns seconds to wait before the next attempt, or None when the schedule is spent."""
    if attempts_done >= len(delays):
        return None
    delay = delays[attempts_done]
    if delay >= JITTER_FROM_S:
        delay += random.uniform(0, JITTER_FRACTION * delay)
    return delay


def _claim(factory: sessionmaker[Session], delivery_id: str, lease_s: float) -> Attempt | None:
    """Returns the claimed attempt, or None when the row is absent, done, not due or leased.

    One conditional UPDATE ... RETURNING is the claim: the row must be pending and due (within
    ``DUE_SLACK_S``), and the claim pushes ``next_attempt_at`` past the lease, so of two claims of
    the same due row (a duplicate task, the sweeper) only the first matches; the other waits for
    the row lock and then sees a row that is no longer due. The same statement returns the
    tenant's signing secrets.
    """
    now = utcnow()
    with session_scope(factory, autocommit=True) as session:  # one statement
        claimed = session.execute(
            _CLAIM,
            {
                "delivery_id": delivery_id,
                "due_by": now + _DUE_SLACK,
                "lease_until": now + dt.timedelta(seconds=lease_s),
            },
        ).first()
        if claimed is None:
            return None
        url, payload, number, created_at, current, previous, expires = claimed
        if number == 1:
            # A row is due from its creation (add_outbox) until its first attempt; only attempts
            # and replays of attempted rows move next_attempt_at, so created_at is the due time.
            observe_since("callback_queue", created_at)
    return _attempt(delivery_id, url, payload, number, (current, previous, expires), now)


def attempt_lease_s(settings: Settings) -> float:
    """Returns how long a claimed attempt holds its row before the sweeper may try again."""
    return settings.callback_timeout_s + LEASE_MARGIN_S


def claimed_first(row: dict[str, Any], lease_s: float) -> dict[str, Any]:
    """Returns a new outbox row (:func:`moderation.outbox.outbox_row`) as the claim of its first
    attempt leaves it: the attempt counted, the row held for ``lease_s``. The scorer writes it so
    when a dispatch thread is reserved for it, and no claim statement is needed before sending;
    if the process dies first, the sweeper sends it once the lease lapses, as after any claim."""
    lease = dt.timedelta(seconds=lease_s)
    return {**row, "attempts": 1, "next_attempt_at": row["created_at"] + lease}


def first_attempt(row: dict[str, Any], signing: tuple[Any, Any, Any]) -> Attempt:
    """Returns the attempt of a row written by :func:`claimed_first`; ``signing`` is the tenant's
    (webhook_secret, previous_webhook_secret, previous_secret_expires_at), all None without a
    tenant. The body is what a claim would read back from the row."""
    return _attempt(str(row["id"]), row["url"], row["payload"], 1, signing, utcnow())


def _attempt(
    delivery_id: str,
    url: str,
    payload: Any,
    number: int,
    signing: tuple[Any, Any, Any],
    now: dt.datetime,
) -> Attempt:
    """Returns a claimed attempt: the payload's canonical JSON as its body, signed by the secrets
    of ``signing`` (see :func:`first_attempt`) that sign ``now``; without a tenant, by none."""
    current, previous, expires = signing
    secrets = _secrets(current, previous, expires, now=now) if current is not None else ("",)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return Attempt(delivery_id, url, secrets, body, number)


def _secrets(
    current: str, previous: str | None, expires: dt.datetime | None, now: dt.datetime
) -> tuple[str, ...]:
    """Returns the secrets that sign now (the rotation rule stays in signing_secrets)."""
    tenant = Tenant(
        webhook_secret=current, previous_webhook_secret=previous, previous_secret_expires_at=expires
    )
    return signing_secrets(tenant, now=now)


def _send(attempt: Attempt, settings: Settings) -> tuple[int | None, str | None]:
    """Returns (status code, error) of one signed POST; error is None only for a 2xx."""
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "user-agent": "dfmod-webhooks/1",
        "webhook-id": attempt.delivery_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signing.signature_header(
            attempt.secrets, attempt.delivery_id, int(timestamp), attempt.body
        ),
    }
    try:
        response = outbound.request(
            "POST",
            attempt.url,
            settings=settings,
            data=attempt.body,
            headers=headers,
            timeout_s=settings.callback_timeout_s,
        )
    except outbound.OutboundError as exc:
        return None, str(exc)[:MAX_ERROR_CHARS]
    with response:
        code = response.status_code
        outbound.release(response)  # the next callback to this platform reuses the connection
    if 200 <= code < 300:
        return code, None
    if 300 <= code < 400:
        return code, f"HTTP {code} redirect not followed; expected a 2xx answer"
    return code, f"HTTP {code}; expected a 2xx answer"


def _record(
    factory: sessionmaker[Session],
    attempt: Attempt,
    code: int | None,
    error: str | None,
    settings: Settings,
) -> DeliveryResult:
    """Returns the row's outcome after one UPDATE that stores the attempt's result.

    The UPDATE only matches while the row still counts this attempt, so the late record of an
    attempt that a newer one has replaced (its lease expired) changes nothing.
    """
    params: dict[str, Any] = {
        "delivery_id": attempt.delivery_id,
        "number": attempt.number,
        "code": code,
        "error": error,
        "now": utcnow(),
    }
    wait = None
    if error is None:
        status = DeliveryStatus.DELIVERED
    else:
        wait = retry_delay(attempts_done=attempt.number, delays=settings.callback_delays)
        status = DeliveryStatus.DEAD if wait is None else DeliveryStatus.PENDING
        if wait is not None:
            params["retry_at"] = params["now"] + dt.timedelta(seconds=wait)
    # One write; the lookup after a miss only reads.
    with session_scope(factory, autocommit=True) as session:
        recorded = session.execute(_RECORD[status], params)
        if recorded.rowcount != 1:  # type: ignore[attr-defined]
            current = session.execute(_STATUS, {"delivery_id": attempt.delivery_id}).scalar()
            return _not_recorded(attempt, current)
    if status == DeliveryStatus.DEAD:
        logger.warning(
            "callback %s dead after %d attempts: %s", attempt.delivery_id, attempt.number, error
        )
    return DeliveryResult(status, attempted=True, retry_in_s=wait)


def _not_recorded(attempt: Attempt, current: str | None) -> DeliveryResult:
    if current is None:
        return DeliveryResult(DeliveryStatus.DEAD, attempted=True)
    logger.warning(
        "callback %s attempt %d not recorded: a newer attempt has claimed the row",
        attempt.delivery_id,
        attempt.number,
    )
    return DeliveryResult(current, attempted=True)


def deliver(
    *, delivery_id: str, session_factory: sessionmaker[Session], settings: Settings
) -> DeliveryResult:
    """Makes one attempt at a due pending delivery; a no-op for rows not due or already done."""
    with stage("database"):
        attempt = _claim(session_factory, delivery_id, attempt_lease_s(settings))
    if attempt is None:
        return DeliveryResult("skipped", attempted=False)
    return deliver_claimed(attempt, session_factory=session_factory, settings=settings)


def deliver_claimed(
    attempt: Attempt,
    *,
    session_factory: sessionmaker[Session],
    settings: Settings,
    queued_at: dt.datetime | None = None,
) -> DeliveryResult:
    """Sends a claimed attempt and records its outcome; ``queued_at`` (a first attempt that the
    scorer claimed: when it was handed to this thread) is observed as the callback's queue
    wait."""
    if queued_at is not None:
        observe_since("callback_queue", queued_at)
    with stage("callback"):
        code, error = _send(attempt, settings)
    with stage("database"):
        result = _record(session_factory, attempt, code, error, settings)
    logger.info(
        "callback %s attempt %d -> %s (%s)",
        attempt.delivery_id,
        attempt.number,
        result.status,
        error or code,
    )
    return result
