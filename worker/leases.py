"""Leases on in-flight jobs: a worker that dies gives its jobs back within seconds.

A worker's heartbeat renews the lease of every job it holds; a lapsed lease is re-enqueued by one
conditional UPDATE; :func:`orphans` catches messages taken but not yet leased
(docs/design.md, "Workers"; docs/reliability.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from moderation.db import session_scope
from moderation.models import MediaKind, Status, Submission, utcnow
from moderation.settings import Settings

logger = logging.getLogger(__name__)

LEASED = (Status.RECEIVED, Status.QUEUED, Status.FETCHING, Status.SCORING)
WAITING = (Status.RECEIVED, Status.QUEUED)
BATCH = 500
_S: Table = Submission.__table__  # type: ignore[assignment]

_owner: str | None = None
_running: set[str] = set()
_running_lock = threading.Lock()


def owner() -> str:
    """Returns this worker's name in ``lease_owner`` (host and main process id, set once before
    a prefork pool forks, so every child of one worker holds its leases under one name)."""
    global _owner
    if _owner is None:
        _owner = f"{socket.gethostname()}:{os.getpid()}"
    return _owner


def expiry(settings: Settings, now: dt.datetime) -> dt.datetime:
    """Returns when a lease taken or renewed at ``now`` lapses."""
    return now + dt.timedelta(seconds=settings.lease_s)


def claimable(busy: str) -> Any:
    """Returns the SQL condition under which a task may claim a row: waiting rows always; a row
    in the ``busy`` status only when unleased, leased by this worker or lapsed (bind parameters
    ``owner``: :func:`owner`, ``now``)."""
    return or_(
        _S.c.status.in_(WAITING),
        and_(
            _S.c.status == busy,
            or_(
                _S.c.lease_owner.is_(None),
                _S.c.lease_owner == bindparam("owner"),
                _S.c.lease_expires_at.is_(None),
                _S.c.lease_expires_at < bindparam("now"),
            ),
        ),
    )


def may_claim(
    *, status: str, lease_owner: str | None, lease_expires_at: dt.datetime | None, busy: str
) -> bool:
    """Returns :func:`claimable` for a row already loaded."""
    if status in WAITING:
        return True
    if status != busy:
        return False
    return (
        lease_owner is None
        or lease_owner == owner()
        or lease_expires_at is None
        or lease_expires_at < utcnow()
    )


@contextmanager
def running(submission_id: str) -> Iterator[bool]:
    """Yields False when this process already runs ``submission_id`` (a duplicate message in the
    same worker, whose lease would let it through), else True until the block ends."""
    with _running_lock:
        duplicate = submission_id in _running
        _running.add(submission_id)
    try:
        yield not duplicate
    finally:
        if not duplicate:
            with _running_lock:
                _running.discard(submission_id)


def _running_now() -> set[str]:
    with _running_lock:
        return set(_running)


def hold(*, session_factory: sessionmaker[Session], ids: Iterable[str], settings: Settings) -> int:
    """Takes or renews this worker's leases on ``ids`` (one UPDATE); returns the rows leased.
    Rows another live worker holds are left alone."""
    ids = list(ids)
    if not ids:
        return 0
    now = utcnow()
    statement = (
        update(_S)
        .where(
            _S.c.id.in_(ids),
            _S.c.status.in_(LEASED),
            or_(
                _S.c.lease_owner.is_(None),
                _S.c.lease_owner == owner(),
                _S.c.lease_expires_at < now,
            ),
        )
        .values(
            lease_owner=owner(),
            lease_expires_at=expiry(settings, now),
            updated_at=_S.c.updated_at,  # a renewal is not a change of the submission
        )
    )
    with session_scope(session_factory, autocommit=True) as session:  # one statement
        return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]


def hand_back(
    *,
    session_factory: sessionmaker[Session],
    submission_id: str,
    due_in_s: float,
    settings: Settings,
) -> None:
    """Releases this worker's lease on a job whose retry is scheduled ``due_in_s`` from now: it
    lapses (and the job is re-enqueued) a lease after that unless the retry claims it first."""
    now = utcnow()
    due = expiry(settings, now + dt.timedelta(seconds=due_in_s))
    statement = (
        update(_S)
        .where(_S.c.id == submission_id, _S.c.lease_owner == owner())
        .values(lease_owner=None, lease_expires_at=due, updated_at=_S.c.updated_at)
    )
    with session_scope(session_factory, autocommit=True) as session:  # one statement
        session.execute(statement)


@dataclass(frozen=True)
class Reclaimed:
    """A job taken back from a lapsed lease (or an orphan): what to enqueue for it."""

    submission_id: str
    needs_fetch: bool
    attempts: int


def _reclaim_rows(session: Session, conditions: list[Any], now: dt.datetime) -> list[Reclaimed]:
    """Clears the lease of the rows matching ``conditions``; returns them. The conditions are on
    the updated row itself, so PostgreSQL checks them again on a row another reclaimer changed
    meanwhile, and each job is returned to one caller only."""
    statement = (
        update(_S)
        .where(*conditions)
        .values(lease_owner=None, lease_expires_at=None, updated_at=now)
        .returning(_S.c.id, _S.c.media_kind, _S.c.blob_sha256, _S.c.attempts)
    )
    return [
        Reclaimed(row.id, row.media_kind == MediaKind.URL and row.blob_sha256 is None, row.attempts)
        for row in session.execute(statement)
    ]


def reclaim(
    *, session_factory: sessionmaker[Session], now: dt.datetime | None = None
) -> list[Reclaimed]:
    """Clears lapsed leases and returns those jobs, at most :data:`BATCH`."""
    now = now or utcnow()
    lapsed = (_S.c.status.in_(LEASED), _S.c.lease_expires_at < now)
    oldest = select(_S.c.id).where(*lapsed).order_by(_S.c.lease_expires_at).limit(BATCH)
    with session_scope(session_factory) as session:
        return _reclaim_rows(session, [_S.c.id.in_(oldest.scalar_subquery()), *lapsed], now)


def orphans(
    *,
    session_factory: sessionmaker[Session],
    settings: Settings,
    waiting_in_broker: int,
    now: dt.datetime | None = None,
) -> list[Reclaimed]:
    """Re-enqueues unleased waiting rows whose message is gone: of the rows unleased for two
    leases, those beyond ``waiting_in_broker`` (the broker's queue is first in, first out, so the
    oldest lost theirs), at most :data:`BATCH`. Returns them."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=2 * settings.lease_s)
    unleased = (
        _S.c.status.in_(WAITING),
        _S.c.lease_expires_at.is_(None),
        _S.c.updated_at < cutoff,
    )
    with session_scope(session_factory) as session:
        count = int(session.execute(select(func.count()).where(*unleased)).scalar() or 0)
        missing = min(count - max(waiting_in_broker, 0), BATCH)
        if missing <= 0:
            return []
        oldest = select(_S.c.id).where(*unleased).order_by(_S.c.updated_at).limit(missing)
        return _reclaim_rows(session, [_S.c.id.in_(oldest.scalar_subquery()), *unleased], now)


class Heartbeat:
    """The thread that renews this worker's leases and re-enqueues other workers' lapsed ones.

    ``held`` returns the submission ids whose messages the worker holds; ``requeue`` sends tasks
    for reclaimed jobs and gives up on spent ones; ``waiting`` returns the broker's queue depth;
    ``chores`` runs with the orphan check, every lease (the worker sends due callbacks there);
    ``started`` returns the ids a pool process or thread has started (their claims lease them);
    by default this process's own record of running jobs, which under prefork holds none of the
    children's: the worker passes Celery's active requests, which the children report to the
    main process, where this thread runs. :meth:`wake` (on every message received) makes
    the next renewal happen at once.
    """

    # After a wake, before writing: a burst of arrivals costs one UPDATE, and messages a free
    # thread started meanwhile are leased by their own claim.
    SETTLE_S = 0.2

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        settings: Settings,
        held: Callable[[], set[str]],
        requeue: Callable[[list[Reclaimed]], None],
        waiting: Callable[[], int | None],
        chores: Callable[[], None] = lambda: None,
        started: Callable[[], set[str]] = _running_now,
    ) -> None:
        self._factory, self._settings = session_factory, settings
        self._chores, self._started = chores, started
        self._held, self._requeue, self._waiting = held, requeue, waiting
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="dfmod-lease-heartbeat", daemon=True)
        self.interval_s = settings.lease_s / 3

    def start(self) -> None:
        owner()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        next_renew = next_orphans = 0.0
        leased: set[str] = set()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                held = self._held()
                if started >= next_renew:  # renew everything held, take back lapsed jobs
                    next_renew = started + self.interval_s
                    hold(session_factory=self._factory, ids=held, settings=self._settings)
                    leased = held
                    self._requeue(reclaim(session_factory=self._factory))
                else:  # messages just received: those not started here meanwhile (a claim
                    # leases its row itself) get their lease now
                    leased &= held
                    new = held - leased - self._started()
                    hold(session_factory=self._factory, ids=new, settings=self._settings)
                    leased |= new
                if started >= next_orphans:
                    next_orphans = started + self._settings.lease_s
                    self._requeue_orphans()
                    self._chores()
            except Exception:  # the database or broker is away: try again next beat
                logger.exception("lease heartbeat failed; retrying in %gs", self.interval_s)
            self._wake.wait(max(next_renew - time.monotonic(), 0.0))
            self._wake.clear()
            self._stop.wait(self.SETTLE_S)

    def _requeue_orphans(self) -> None:
        waiting = self._waiting()
        if waiting is not None:
            self._requeue(
                orphans(
                    session_factory=self._factory,
                    settings=self._settings,
                    waiting_in_broker=waiting,
                )
            )
