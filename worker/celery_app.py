"""The one Celery application: broker, reliability options, task names and the sweeper schedule.

Importing it imports no task, Triton or database module; the worker binds the tasks with
:func:`worker.tasks.register_tasks`. Late acks, JSON only, no results (docs/design.md, "Workers").
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from moderation.settings import Settings
from worker import redis_transport, sqlite_broker
from worker.enqueue import TASK_SWEEP
from worker.sqlite_broker import SQLA_PREFETCH_MULTIPLIER, ensure_sqlite_folder

logger = logging.getLogger(__name__)


# Redis redelivers a reserved-but-unacknowledged message after its visibility timeout. Recovery
# from a lost worker does not wait for it (worker.leases re-enqueues a lapsed job within a lease
# and a heartbeat), so it only has to exceed the longest time a live worker keeps a message
# unacknowledged: the longest countdown (callbacks wait up to worker.callbacks.MAX_COUNTDOWN_S;
# scoring retries less) plus the task's hard time limit; a redelivery after that meets the job's
# lease or its end state and does nothing.
LONGEST_COUNTDOWN_S = 600.0


class DfmodCelery(Celery):
    """Celery carrying the :class:`Settings` it was built from, read by tasks at run time."""

    settings: Settings


def redis_visibility_timeout_s(settings: Settings) -> float:
    """Returns the Redis visibility timeout that agrees with the leases (see above)."""
    longest = max(LONGEST_COUNTDOWN_S, *settings.score_retry_delays)
    return longest + settings.task_time_limit_s + 2 * settings.lease_s


def _transport_options(broker_url: str, settings: Settings) -> dict[str, Any]:
    if broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        return {"visibility_timeout": redis_visibility_timeout_s(settings)}
    return {}


def create_celery(settings: Settings) -> DfmodCelery:
    """Returns the dfmod Celery app configured from settings (broker, reliability, beat)."""
    broker_url = settings.resolved_broker_url
    ensure_sqlite_folder(broker_url)
    # Each prefix goes to dfmod's subclass of kombu's transport for it (see both modules).
    connect_url = redis_transport.broker_url_for(sqlite_broker.broker_url_for(broker_url))
    app = DfmodCelery("dfmod", broker=connect_url, set_as_current=False)
    app.settings = settings
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=SQLA_PREFETCH_MULTIPLIER
        if broker_url.startswith("sqla+")
        else 1,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        # Enforced by the prefork pool (the soft limit raises SoftTimeLimitExceeded in the task,
        # which fails the submission; the hard one kills the process, and the sweeper retries);
        # the threads pool relies on the per-call timeouts of Triton, HTTP and the database.
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_default_queue="dfmod",
        broker_transport_options=_transport_options(broker_url, settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
        timezone="UTC",
        beat_schedule={
            "sweep": {"task": TASK_SWEEP, "schedule": float(settings.sweep_interval_s)},
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    return app
