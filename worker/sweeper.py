"""The periodic sweeper: nothing accepted is left without an end state, no due callback is lost.

Every ``sweep_interval_s`` it re-enqueues stuck submissions, lapsed leases and due callbacks, and
ends ``failed`` what was picked up more than :func:`max_attempts` times. Re-enqueueing is safe.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from moderation.db import session_scope
from moderation.models import (
    CallbackDelivery,
    DeliveryStatus,
    FailureReason,
    MediaKind,
    Status,
    Submission,
    utcnow,
)
from moderation.settings import Settings
from worker import leases
from worker.scoring import fail_submission

logger = logging.getLogger(__name__)

SWEPT = (Status.RECEIVED, Status.QUEUED, Status.FETCHING, Status.SCORING)
BATCH = 500


def max_attempts(settings: Settings) -> int:
    """Returns how many pick-ups a submission gets before the sweeper gives up on it."""
    return len(settings.score_retry_delays) + 10


@dataclass
class SweepResult:
    """Ids to enqueue, by task, and submissions the sweeper ended ``failed``."""

    fetch: list[str] = field(default_factory=list)
    score: list[str] = field(default_factory=list)
    deliver: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)


def _stuck(session: Session, cutoff: dt.datetime) -> list[Submission]:
    query = (
        select(Submission)
        .where(
            Submission.status.in_(SWEPT),
            Submission.updated_at < cutoff,
            Submission.lease_expires_at.is_(None),  # leased rows are worker.leases' to reclaim
        )
        .order_by(Submission.updated_at)
        .limit(BATCH)
    )
    return list(session.scalars(query))


def _sweep_submissions(
    factory: sessionmaker[Session], settings: Settings, now: dt.datetime, result: SweepResult
) -> list[str]:
    cutoff = now - dt.timedelta(seconds=settings.stuck_after_s)
    give_up: list[str] = []
    with session_scope(factory) as session:
        for sub in _stuck(session, cutoff):
            if sub.attempts >= max_attempts(settings):
                give_up.append(sub.id)
                continue
            needs_fetch = sub.media_kind == MediaKind.URL and sub.blob_sha256 is None
            (result.fetch if needs_fetch else result.score).append(sub.id)
            sub.updated_at = now  # not picked again before stuck_after_s passes
    return give_up


def _due_deliveries(
    factory: sessionmaker[Session], now: dt.datetime, grace: dt.timedelta
) -> list[str]:
    """Returns pending deliveries that are due, leaving out rows never attempted that fell due
    less than ``grace`` ago: those are due from their creation and their first attempt was
    handed over then (dispatch threads or broker), so a sweep would only send a second task that
    loses the claim. One lost on the way (a crash between commit and publish) is found by the
    next sweep. Rows already attempted wait for retries the sweeper may own, so no grace there.
    """
    with session_scope(factory) as session:
        query = (
            select(CallbackDelivery.id)
            .where(
                CallbackDelivery.status == DeliveryStatus.PENDING,
                CallbackDelivery.next_attempt_at <= now,
                or_(
                    CallbackDelivery.attempts > 0,
                    CallbackDelivery.next_attempt_at <= now - grace,
                ),
            )
            .order_by(CallbackDelivery.next_attempt_at)
            .limit(BATCH)
        )
        return list(session.scalars(query))


def due_deliveries(
    *, session_factory: sessionmaker[Session], settings: Settings, now: dt.datetime | None = None
) -> list[str]:
    """Returns the callback deliveries to send now (see :func:`_due_deliveries`): the sweeper's,
    and every worker's lease heartbeat's, so a lost worker's callbacks go on without beat."""
    grace = dt.timedelta(seconds=settings.sweep_interval_s)
    return _due_deliveries(session_factory, now or utcnow(), grace)


def sweep(
    *, session_factory: sessionmaker[Session], settings: Settings, now: dt.datetime | None = None
) -> SweepResult:
    """Returns what to re-enqueue; ends submissions that exhausted their attempts ``failed``."""
    now = now or utcnow()
    result = SweepResult()
    give_up = _sweep_submissions(session_factory, settings, now, result)
    for job in leases.reclaim(session_factory=session_factory, now=now):
        if job.attempts >= max_attempts(settings):
            give_up.append(job.submission_id)
        else:
            (result.fetch if job.needs_fetch else result.score).append(job.submission_id)
    for submission_id in give_up:
        failed = fail_submission(
            submission_id=submission_id,
            session_factory=session_factory,
            reason=FailureReason.INTERNAL_ERROR,
            detail=f"gave up after {max_attempts(settings)} attempts",
        )
        result.gave_up.append(submission_id)
        if failed.delivery_id:
            result.deliver.append(failed.delivery_id)
    result.deliver.extend(
        d
        for d in due_deliveries(session_factory=session_factory, settings=settings, now=now)
        if d not in result.deliver
    )
    if result.fetch or result.score or result.deliver or result.gave_up:
        logger.info(
            "sweep: fetch %d, score %d, deliver %d, gave up %d",
            len(result.fetch),
            len(result.score),
            len(result.deliver),
            len(result.gave_up),
        )
    return result
