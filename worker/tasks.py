"""The Celery tasks: a few lines each around the plain functions of ``worker/``.

:func:`register_tasks` binds them to the app; retry policy lives here (Triton outages on
``settings.score_retry_delays``, other errors on :data:`INTERNAL_RETRY_DELAYS`, then ``failed``;
a database that cannot be reached on :data:`DATABASE_RETRY_DELAYS`, for as long as it lasts).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from moderation.db import DATABASE_UNAVAILABLE
from moderation.models import FailureReason, utcnow
from worker import callbacks, dispatch, fetch, leases, scoring, sweeper
from worker.celery_app import DfmodCelery
from worker.deps import WorkerDeps, deps_for
from worker.enqueue import TASK_DELIVER, TASK_FETCH, TASK_SCORE, TASK_SWEEP, enqueue

logger = logging.getLogger(__name__)

INTERNAL_RETRY_DELAYS = (5.0, 30.0, 120.0)
# The database cannot be reached (moderation.db.DATABASE_UNAVAILABLE): nothing can be recorded,
# not even a failure, so the task is sent again after these seconds, the last one repeating,
# until the database answers. The message stays with the broker meanwhile instead of being
# dropped for the leases to find.
DATABASE_RETRY_DELAYS = (2.0, 5.0, 10.0, 20.0, 30.0)


def _deps(task: Task) -> WorkerDeps:
    return deps_for(task.app.settings)


def hand_over_delivery(app: Any, delivery_id: str) -> None:
    """Makes a new outbox row's first attempt from this process's dispatch threads, or enqueues
    it when they are off or their backlog is full (see :mod:`worker.dispatch`)."""
    pool = dispatch.dispatcher(app.settings.callback_dispatch_threads)
    if pool is None or not pool.offer(lambda: deliver_and_schedule(app, delivery_id)):
        enqueue(app, TASK_DELIVER, delivery_id)


def deliver_and_schedule(app: Any, delivery_id: str) -> str:
    """Makes one delivery attempt; short waits are scheduled here, long ones by the sweeper."""
    deps = deps_for(app.settings)
    result = callbacks.deliver(
        delivery_id=delivery_id, session_factory=deps.session_factory, settings=deps.settings
    )
    return _schedule(app, delivery_id, result)


def send_and_schedule(app: Any, attempt: callbacks.Attempt, queued_at: dt.datetime) -> str:
    """Sends a first attempt the scorer claimed; schedules the retry like
    :func:`deliver_and_schedule`."""
    deps = deps_for(app.settings)
    result = callbacks.deliver_claimed(
        attempt, session_factory=deps.session_factory, settings=deps.settings, queued_at=queued_at
    )
    return _schedule(app, attempt.delivery_id, result)


def _schedule(app: Any, delivery_id: str, result: callbacks.DeliveryResult) -> str:
    wait = result.retry_in_s
    if wait is not None and wait <= callbacks.MAX_COUNTDOWN_S:
        enqueue(app, TASK_DELIVER, delivery_id, countdown=wait)
    return result.status


def _retry_or_fail(
    task: Task, submission_id: str, exc: Exception, *, inference: bool, database_retries: int
) -> str:
    deps = _deps(task)
    delays = deps.settings.score_retry_delays if inference else INTERNAL_RETRY_DELAYS
    retries = task.request.retries - database_retries  # those waits were not the job's tries
    if retries < len(delays):
        logger.warning(
            "retry %d of %s in %gs: %s", retries + 1, submission_id, delays[retries], exc
        )
        leases.hand_back(
            session_factory=deps.session_factory,
            submission_id=submission_id,
            due_in_s=delays[retries],
            settings=deps.settings,
        )
        raise task.retry(countdown=delays[retries], exc=exc)
    reason = FailureReason.INFERENCE_UNAVAILABLE if inference else FailureReason.INTERNAL_ERROR
    detail = f"{type(exc).__name__}: {exc}; gave up after {retries + 1} attempts"
    return _fail(task, submission_id, reason, detail)


def _retry_when_the_database_is_back(
    task: Task, submission_id: str, exc: Exception, database_retries: int
) -> str:
    """Sends the task again after the next of :data:`DATABASE_RETRY_DELAYS` (raises Retry); the
    message counts these waits apart, so they use up none of the job's tries."""
    delay = DATABASE_RETRY_DELAYS[min(database_retries, len(DATABASE_RETRY_DELAYS) - 1)]
    logger.warning(
        "database unavailable while working on %s (%s); trying again in %gs",
        submission_id,
        type(exc).__name__,
        delay,
    )
    raise task.retry(
        args=[submission_id],
        kwargs={"database_retries": database_retries + 1},
        countdown=delay,
        exc=exc,
        max_retries=None,
    )


def _out_of_time(task: Task, submission_id: str, reason: str, what: str) -> str:
    """Ends a submission whose task ran past the soft time limit ``failed`` (never retried: the
    same media would run out of time again); returns the outcome."""
    limit = _deps(task).settings.task_soft_time_limit_s
    detail = f"{what} ran past the task time limit of {limit:g}s (DFMOD_TASK_SOFT_TIME_LIMIT_S)"
    logger.warning("%s: %s", submission_id, detail)
    return _fail(task, submission_id, reason, detail)


def _fail(task: Task, submission_id: str, reason: str, detail: str) -> str:
    """Ends the submission ``failed`` with its reason and sends the failure callback."""
    failed = scoring.fail_submission(
        submission_id=submission_id,
        session_factory=_deps(task).session_factory,
        reason=reason,
        detail=detail,
    )
    if failed.delivery_id:
        hand_over_delivery(task.app, failed.delivery_id)
    return failed.outcome.value


def score_submission(task: Task, submission_id: str, database_retries: int = 0) -> str:
    """Scores a submission; enqueues its callback or, for unfetched media, the fetch.

    Just before the verdict's write an idle dispatch thread is reserved if there is one; the
    outbox row is then written claimed for its first attempt, which that thread sends: no claim
    statement before the first callback (docs/design.md, "First attempts without the broker")."""
    from serving.client import InferenceUnavailable

    deps = _deps(task)
    thread = dispatch.Reservation(dispatch.dispatcher(deps.settings.callback_dispatch_threads))
    lease_s = callbacks.attempt_lease_s(deps.settings)
    try:
        try:
            result = scoring.score_submission(
                submission_id=submission_id,
                session_factory=deps.session_factory,
                blobs=deps.blobs,
                client=deps.client,
                settings=deps.settings,
                matcher=deps.matcher,
                claim_first_attempt=lambda: lease_s if thread.take() else None,
            )
        except BaseException:
            thread.release()  # held only if the verdict's write itself raised
            raise
    except InferenceUnavailable as exc:
        return _retry_or_fail(
            task, submission_id, exc, inference=True, database_retries=database_retries
        )
    except SoftTimeLimitExceeded:
        return _out_of_time(task, submission_id, FailureReason.INTERNAL_ERROR, "scoring")
    except DATABASE_UNAVAILABLE as exc:
        return _retry_when_the_database_is_back(task, submission_id, exc, database_retries)
    except Exception as exc:
        logger.exception("scoring %s failed unexpectedly", submission_id)
        return _retry_or_fail(
            task, submission_id, exc, inference=False, database_retries=database_retries
        )
    if result.attempt is not None:
        attempt, queued_at = result.attempt, utcnow()
        thread.submit(lambda: send_and_schedule(task.app, attempt, queued_at))
    else:
        thread.release()
        if result.delivery_id:
            hand_over_delivery(task.app, result.delivery_id)
    if result.outcome is scoring.Outcome.NEEDS_FETCH:
        enqueue(task.app, TASK_FETCH, submission_id)
    return result.outcome.value


def fetch_media(task: Task, submission_id: str, database_retries: int = 0) -> str:
    """Fetches a submission's media_url; enqueues scoring (or the failure callback)."""
    deps = _deps(task)
    try:
        result = fetch.fetch_media(
            submission_id=submission_id,
            session_factory=deps.session_factory,
            blobs=deps.blobs,
            settings=deps.settings,
        )
    except SoftTimeLimitExceeded:
        return _out_of_time(task, submission_id, FailureReason.FETCH_FAILED, "fetching media_url")
    except DATABASE_UNAVAILABLE as exc:
        return _retry_when_the_database_is_back(task, submission_id, exc, database_retries)
    except Exception as exc:
        logger.exception("fetching %s failed unexpectedly", submission_id)
        return _retry_or_fail(
            task, submission_id, exc, inference=False, database_retries=database_retries
        )
    if result.outcome is fetch.FetchOutcome.STORED:
        enqueue(task.app, TASK_SCORE, submission_id)
    if result.delivery_id:
        hand_over_delivery(task.app, result.delivery_id)
    return result.outcome.value


def deliver_callback(task: Task, delivery_id: str) -> str:
    """Makes one delivery attempt (retries, sweeps and full dispatch backlogs come here)."""
    return deliver_and_schedule(task.app, delivery_id)


def enqueue_sweep_result(app: Any, result: sweeper.SweepResult) -> None:
    """Sends the tasks a sweep asked for."""
    for name, ids in ((TASK_FETCH, result.fetch), (TASK_SCORE, result.score)):
        for item_id in ids:
            enqueue(app, name, item_id)
    for delivery_id in result.deliver:
        enqueue(app, TASK_DELIVER, delivery_id)


def requeue_reclaimed(
    app: Any, jobs: list[leases.Reclaimed], session_factory: sessionmaker[Session]
) -> None:
    """Enqueues jobs taken back from lapsed leases; ends those out of attempts ``failed``."""
    settings = app.settings
    for job in jobs:
        if job.attempts >= sweeper.max_attempts(settings):
            failed = scoring.fail_submission(
                submission_id=job.submission_id,
                session_factory=session_factory,
                reason=FailureReason.INTERNAL_ERROR,
                detail=f"gave up after {job.attempts} attempts",
            )
            if failed.delivery_id:
                enqueue(app, TASK_DELIVER, failed.delivery_id)
            continue
        enqueue(app, TASK_FETCH if job.needs_fetch else TASK_SCORE, job.submission_id)
    if jobs:
        logger.info("leases: re-enqueued %d jobs (a lapsed lease or a lost message)", len(jobs))


def send_due_deliveries(app: Any, session_factory: sessionmaker[Session]) -> None:
    """Enqueues the callback deliveries that are due (a dead worker's claimed or first attempts
    included); each attempt is claimed, so a duplicate task does nothing."""
    settings = app.settings
    for delivery_id in sweeper.due_deliveries(session_factory=session_factory, settings=settings):
        enqueue(app, TASK_DELIVER, delivery_id)


def sweep(task: Task) -> dict[str, int]:
    """Re-enqueues stuck submissions and due deliveries."""
    deps = _deps(task)
    result = sweeper.sweep(session_factory=deps.session_factory, settings=deps.settings)
    enqueue_sweep_result(task.app, result)
    return {"fetch": len(result.fetch), "score": len(result.score), "deliver": len(result.deliver)}


def register_tasks(app: DfmodCelery) -> DfmodCelery:
    """Binds the four tasks to ``app`` under their names; returns the app."""
    options: dict[str, Any] = {"bind": True, "max_retries": None, "acks_late": True}
    app.task(name=TASK_SCORE, **options)(score_submission)
    app.task(name=TASK_FETCH, **options)(fetch_media)
    app.task(name=TASK_DELIVER, **options)(deliver_callback)
    app.task(name=TASK_SWEEP, **options)(sweep)
    return app
