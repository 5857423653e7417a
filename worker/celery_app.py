"""The one Celery application: broker, reliability options, task names and the sweeper schedule.

The API only needs :func:`create_celery` and the task-name constants to enqueue work by name
(``send_task``), so importing this module never imports the tasks, Triton or the database. The
worker binds the tasks with :func:`worker.tasks.register_tasks` when it starts.

Reliability: tasks are acknowledged late and rejected back to the queue when a worker process dies,
each worker process reserves one message at a time on Redis (a few per thread on the polled SQLite
broker, see SQLA_PREFETCH_MULTIPLIER), payloads are JSON only and results are not stored (the
database is the source of truth). Every task is idempotent, so redelivery is safe; messages a
killed worker had reserved are re-enqueued by the sweeper.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from kombu import transport as kombu_transport
from kombu.transport import sqlalchemy as kombu_sqla

from moderation.settings import Settings

logger = logging.getLogger(__name__)

TASK_SCORE = "dfmod.score_submission"
TASK_FETCH = "dfmod.fetch_media"
TASK_DELIVER = "dfmod.deliver_callback"
TASK_SWEEP = "dfmod.sweep"
TASK_NAMES = (TASK_SCORE, TASK_FETCH, TASK_DELIVER, TASK_SWEEP)

# Redis redelivers a reserved-but-unacknowledged message after this long. Countdowns given to
# apply_async stay well below it; longer waits are left to the sweeper (see worker.callbacks).
REDIS_VISIBILITY_TIMEOUT_S = 3600
# How often the SQLAlchemy transport polls its queue table. It also sleeps this long whenever
# the worker holds its full prefetch, so a freed thread waits for the next poll unless messages
# are already reserved: on this transport the worker reserves SQLA_PREFETCH_MULTIPLIER messages
# per thread. Polling costs CPU while idle (~2.6 % of a core at 0.2 s, ~4-5 % at 0.1 s,
# ~15 % at 0.02 s on the development machine).
SQLA_POLLING_INTERVAL_S = 0.1
SQLA_PREFETCH_MULTIPLIER = 4
SQLA_ALIAS = "dfmodsqla"


class DfmodCelery(Celery):
    """Celery carrying the :class:`Settings` it was built from, read by tasks at run time."""

    settings: Settings


class SqlaChannel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel, on SQLite with the settings dfmod's own database uses.

    kombu opens the broker file with SQLite's defaults: a rollback journal written, synced and
    deleted on every commit, i.e. on every publish, fetch and ack (about 3 ms of CPU and 5 ms of
    wall time each here). WAL with ``synchronous=NORMAL`` appends to a log instead (1.5 ms):
    durable across process crashes; a power cut may lose the last messages, which the sweeper
    re-enqueues from the database. WAL state must not cross a fork, which is why ``dfmod worker``
    runs its embedded beat as a thread and refuses the prefork pool on this broker.
    """

    def _get_or_create(self, queue: str) -> Any:
        """Returns the queue's row; a row another process inserted first is simply read.

        kombu's version is SELECT-then-INSERT and only forgives ``OperationalError``, so the loser
        of a race (an API publishing while the worker declares the queue) raised an
        ``IntegrityError`` and its submission waited for the sweeper.
        """
        from sqlalchemy.exc import IntegrityError

        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return super()._get_or_create(queue)

    def _engine_from_config(self) -> Any:
        engine = super()._engine_from_config()
        if engine.dialect.name == "sqlite":
            from sqlalchemy import event

            from moderation.db import sqlite_pragmas

            event.listen(engine, "connect", sqlite_pragmas)
        return engine


class SqlaTransport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport on :class:`SqlaChannel`, polling faster than its 1 s default.

    The interval cannot go through ``broker_transport_options``: this transport hands those to
    ``create_engine``, which refuses unknown keywords. Selected by the ``dfmodsqla+`` URL prefix.
    """

    Channel = SqlaChannel
    polling_interval = SQLA_POLLING_INTERVAL_S


kombu_transport.TRANSPORT_ALIASES.setdefault(SQLA_ALIAS, f"{__name__}:SqlaTransport")


def _forget_broker_engines_after_fork() -> None:
    """Drops the SQLAlchemy transport's engines (a class-level cache) in a forked child.

    The embedded beat and prefork children are forked from a worker that already talks to the
    broker; SQLite connections must not cross a fork (the beat process even closes the inherited
    descriptors), so the child opens its own, as SQLAlchemy's pooling guide recommends.
    """
    engines = kombu_sqla.Channel._engines
    for engine, _session in list(engines.values()):
        engine.dispose(close=False)
    engines.clear()


os.register_at_fork(after_in_child=_forget_broker_engines_after_fork)


def broker_url_for(url: str) -> str:
    """Returns the URL Celery connects with: ``sqla+`` is routed to :class:`SqlaTransport`."""
    return SQLA_ALIAS + url[len("sqla") :] if url.startswith("sqla+") else url


def _transport_options(broker_url: str) -> dict[str, Any]:
    if broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        return {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}
    return {}


def _ensure_sqlite_folder(url: str) -> None:
    """Creates the folder of a ``sqla+sqlite:///path`` broker file (SQLite won't)."""
    prefix = "sqla+sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        from pathlib import Path

        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def create_celery(settings: Settings) -> DfmodCelery:
    """Returns the dfmod Celery app configured from settings (broker, reliability, beat)."""
    broker_url = settings.resolved_broker_url
    _ensure_sqlite_folder(broker_url)
    app = DfmodCelery("dfmod", broker=broker_url_for(broker_url), set_as_current=False)
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
        broker_transport_options=_transport_options(broker_url),
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
