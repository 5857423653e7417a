"""The embedded broker: kombu's SQLAlchemy transport on SQLite (or PostgreSQL), made faster and
safe for dfmod (docs/design.md, "SQLite broker"). Importing it registers the ``dfmodsqla+`` URL
prefix and a fork hook that drops the broker engines in a child. It overrides private parts of
kombu's transport, so kombu is pinned and ``tests/worker/test_broker_contract.py`` checks it.
"""

from __future__ import annotations

import logging
import os
from queue import Empty
from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import sqlalchemy as kombu_sqla

from worker.doorbell import doorbell_for

logger = logging.getLogger(__name__)

# How often the SQLAlchemy transport polls its queue table. It also sleeps this long whenever
# the worker holds its full prefetch, so a freed thread waits for the next poll unless messages
# are already reserved: on this transport the worker reserves SQLA_PREFETCH_MULTIPLIER messages
# per thread. Idle polling costs CPU (figures in docs/design.md, "SQLite broker").
SQLA_POLLING_INTERVAL_S = 0.1
SQLA_PREFETCH_MULTIPLIER = 4
SQLA_ALIAS = "dfmodsqla"


class SqlaChannel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel with WAL pragmas on SQLite, one SQL statement per publish (an
    INSERT) and per fetch (a ``DELETE … RETURNING`` of the oldest message) on SQLite 3.35+ and
    PostgreSQL, and rows kombu left delivered deleted when an engine is first opened
    (docs/design.md, "SQLite broker").
    """

    single_statements = True  # False: kombu's ORM path (benchmarks/bench_broker.py compares)
    _queue_ids: dict[str, int]
    _core: Any = None  # this channel's own SQLAlchemy Connection, opened on first use

    def _get_or_create(self, queue: str) -> Any:
        """Returns the queue's row; a row another process inserted first is simply read.

        The one guard against the queue-declaration race, in every process on this transport
        (API publishing, worker consumer, beat): kombu's SELECT-then-INSERT forgives only
        ``OperationalError``, so its loser raised an ``IntegrityError``.
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
        _create_tables(engine)
        if _fast_path(engine):
            _drop_delivered(engine, self.message_cls.__table__)
        return engine

    def _connection(self) -> Any:
        """Returns this channel's Core connection (fast path) or None (kombu's ORM path)."""
        if self._core is None:
            engine, _ = self._open()
            if not (self.single_statements and _fast_path(engine)):
                return None
            self._core = engine.connect()
            self._queue_ids = {}
        return self._core

    def _queue_id(self, queue: str) -> int:
        known = self._queue_ids.get(queue)
        if known is None:
            known = self._queue_ids[queue] = int(self._get_or_create(queue).id)
            self.session.commit()  # end the ORM's read transaction: it would pin a snapshot
        return known

    # kombu's two base classes disagree on this signature; this one matches the nearer.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        connection = self._connection()
        if connection is None:
            return super()._put(queue, payload, **kwargs)
        from kombu.utils.json import dumps
        from sqlalchemy import insert

        statement = insert(self.message_cls.__table__).values(
            queue_id=self._queue_id(queue), payload=dumps(payload), visible=True, version=1
        )
        _run(connection, statement)
        bell = doorbell_for(self.connection.client.hostname)
        if bell is not None:
            bell.ring()
        return None

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        connection = self._connection()
        if connection is None:
            return super()._get(queue)
        from kombu.utils.json import loads
        from sqlalchemy import delete, select

        table = self.message_cls.__table__
        oldest = (
            select(table.c.id)
            .where(table.c.queue_id == self._queue_id(queue), table.c.visible.is_(True))
            .order_by(table.c.id)
            .limit(1)
        )
        if connection.dialect.name == "postgresql":
            oldest = oldest.with_for_update(skip_locked=True)
        statement = (
            delete(table).where(table.c.id == oldest.scalar_subquery()).returning(table.c.payload)
        )
        payload = _run(connection, statement, fetch=True)
        if payload is None:
            raise Empty()
        return loads(payload if isinstance(payload, str) else payload.decode())

    def close(self) -> None:
        super().close()
        if self._core is not None:
            core, self._core = self._core, None
            core.close()


def _fast_path(engine: Any) -> bool:
    """Whether the broker's database runs :class:`SqlaChannel`'s single statements."""
    name = engine.dialect.name
    return name == "postgresql" or (name == "sqlite" and _sqlite_has_returning())


def _sqlite_has_returning() -> bool:
    import sqlite3

    return sqlite3.sqlite_version_info >= (3, 35)


def _run(connection: Any, statement: Any, *, fetch: bool = False) -> Any:
    """Executes one statement in its own transaction; returns the first column of its row."""
    from sqlalchemy.exc import DBAPIError

    try:
        result = connection.execute(statement)
        value = result.scalar() if fetch else None
        connection.commit()
    except DBAPIError:
        connection.rollback()
        raise
    return value


def _create_tables(engine: Any) -> None:
    """Creates kombu's tables before kombu does; a table another process created between the
    check and the CREATE is simply there (kombu's own ``create_all`` then has nothing to do)."""
    from sqlalchemy.exc import DBAPIError

    try:
        kombu_sqla.metadata.create_all(engine)
    except DBAPIError:
        kombu_sqla.metadata.create_all(engine)  # an error other than that race comes back here


def _drop_delivered(engine: Any, table: Any) -> None:
    """Deletes the messages kombu's own channel kept after delivering them (``visible = 0``)."""
    from sqlalchemy import delete, inspect

    if not inspect(engine).has_table(table.name):
        return
    with engine.begin() as connection:
        dropped = connection.execute(delete(table).where(table.c.visible.is_(False))).rowcount
    if dropped:
        logger.info("broker: deleted %d messages delivered before this version", dropped)


class SqlaTransport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport on :class:`SqlaChannel`, polling faster than its 1 s default
    and woken between polls by a publish on the same host (:mod:`worker.doorbell`).

    The interval cannot go through ``broker_transport_options``: this transport hands those to
    ``create_engine``, which refuses unknown keywords. Selected by the ``dfmodsqla+`` URL prefix.
    """

    Channel = SqlaChannel
    polling_interval = SQLA_POLLING_INTERVAL_S

    # kombu's two base classes disagree on this signature; this one matches the nearer.
    def drain_events(self, connection: Any, timeout: Any = None) -> Any:  # type: ignore[override]
        """kombu's loop (``virtual.Transport.drain_events``), waiting between polls on the SQLite
        broker's doorbell (:mod:`worker.doorbell`) instead of sleeping: a publish wakes it."""
        import time

        bell = doorbell_for(self.client.hostname) if self.client is not None else None
        if bell is None or self.cycle is None:
            return super().drain_events(connection, timeout=timeout)
        started = time.monotonic()
        interval = self.polling_interval or SQLA_POLLING_INTERVAL_S
        if timeout:
            interval = min(interval, timeout)
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise TimeoutError() from None
                bell.wait(interval)
            else:
                return None


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


def ensure_sqlite_folder(url: str) -> None:
    """Creates the folder of a ``sqla+sqlite:///path`` broker file (SQLite won't)."""
    prefix = "sqla+sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        from pathlib import Path

        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
