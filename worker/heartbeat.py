"""Wires the lease heartbeat (:mod:`worker.leases`) into a Celery worker's main process.

It reads what the worker holds from ``celery.worker.state``, has its own database engine (kept out
of prefork children) and asks the broker how many messages wait.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from moderation.db import make_engine, make_session_factory
from worker import leases
from worker.celery_app import DfmodCelery
from worker.enqueue import TASK_FETCH, TASK_SCORE

logger = logging.getLogger(__name__)

HELD_TASKS = (TASK_SCORE, TASK_FETCH)


def _submission_ids(requests: Any) -> set[str]:
    """Returns the submission ids of the scoring and fetch requests in a set of Celery's."""
    for _attempt in range(3):
        try:
            copied = list(requests)
            break
        except RuntimeError:  # the consumer changed the set while it was copied
            continue
    else:
        return set()
    ids = set()
    for request in copied:
        args = request.args if request.name in HELD_TASKS else None
        if args and isinstance(args[0], str):
            ids.add(args[0])
    return ids


def held_submissions() -> set[str]:
    """Returns the ids of submissions whose scoring or fetch this worker received, unfinished."""
    from celery.worker import state

    return _submission_ids(state.reserved_requests)


def started_submissions() -> set[str]:
    """Returns the ids of those a pool process or thread has started (Celery's active requests:
    a prefork child reports each start to the main process)."""
    from celery.worker import state

    return _submission_ids(state.active_requests)


def broker_waiting(app: DfmodCelery) -> int | None:
    """Returns how many messages wait in the default queue, or None if the broker cannot say."""
    from kombu.exceptions import ChannelError

    queue = app.conf.task_default_queue
    try:
        with app.connection_for_read() as connection:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count)
    except ChannelError:  # Redis keeps no empty list: a queue not found is an empty one
        return 0
    except Exception as exc:
        logger.info("lease heartbeat: queue depth unknown (%s)", exc)
        return None


def attach(app: DfmodCelery) -> leases.Heartbeat:
    """Starts the heartbeat when the worker is ready and stops it on shutdown; returns it."""
    from celery import signals

    from worker.tasks import requeue_reclaimed, send_due_deliveries

    settings = app.settings
    engine = make_engine(settings.resolved_database_url)
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    factory = make_session_factory(engine)  # never worker.deps': prefork children fork later
    beat = leases.Heartbeat(
        session_factory=factory,
        settings=settings,
        held=held_submissions,
        requeue=lambda jobs: requeue_reclaimed(app, jobs, factory),
        waiting=lambda: broker_waiting(app),
        chores=lambda: send_due_deliveries(app, factory),
        started=started_submissions,
    )
    leases.owner()  # named in the main process, before a prefork pool forks

    def start(**_: Any) -> None:
        logger.info("lease heartbeat: owner %s, every %gs", leases.owner(), beat.interval_s)
        beat.start()

    signals.worker_ready.connect(start, weak=False)
    signals.worker_shutdown.connect(lambda **_: beat.stop(), weak=False)
    signals.task_received.connect(lambda **_: beat.wake(), weak=False)
    return beat
