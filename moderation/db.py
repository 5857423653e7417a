"""Engines, sessions and migrations: how every process talks to the one database.

SQLite connections get WAL, a busy timeout, foreign keys and ``BEGIN IMMEDIATE`` (read-only scopes
begin deferred). PostgreSQL connections are checked without a round trip, and one-statement or
read-only blocks run without BEGIN/COMMIT (``autocommit=True``; docs/design.md, "PostgreSQL
connections"). No engine exists at import time.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option marking a transaction that only reads (see session_scope).
READ_ONLY_OPTION = "dfmod_read_only"
# A pooled PostgreSQL connection idle for longer than this is pinged before use (see
# _postgres_checkout); one in use more recently is only checked without a round trip.
PING_IDLE_S = 10.0
# Connections a PostgreSQL pool keeps open (make_engine's pool_size): what one worker process
# holds at once (pool threads, callback dispatch, heartbeat); the API sizes its own by threads.
POSTGRES_POOL_SIZE = 10
# Seconds a new PostgreSQL connection may take (libpq's connect_timeout) unless the URL says.
POSTGRES_CONNECT_TIMEOUT_S = 10
_CHECKED_IN = "dfmod_checked_in"
# The errors of a database that cannot be reached for the moment (connections refused or cut by
# a restart or failover, the pool exhausted, SQLite's lock wait run out): the same work can
# succeed when it is back. The API answers them 503, the worker sends its task again.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
)


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit BEGIN is deferred; see _sqlite_begin).
    dbapi_connection.isolation_level = None
    sqlite_pragmas(dbapi_connection, record)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Sets WAL, the busy timeout, foreign keys and ``synchronous=NORMAL`` on a new connection
    (a ``connect`` listener; the embedded broker's file gets it too)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout. A deferred
    # transaction that reads and then writes can fail at once with "database is locked" when
    # another process (API thread, worker, sweeper) committed in between. A transaction that
    # only reads begins deferred: in WAL mode it reads a snapshot without waiting for writers.
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _postgres_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info[_CHECKED_IN] = time.monotonic()


def _readable(fd: int) -> bool:
    """Returns whether ``fd`` has data, an end of file or an error waiting (without waiting)."""
    if hasattr(select, "poll"):  # no FD_SETSIZE limit, unlike select()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _postgres_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Refuses a pooled connection the server has closed (the pool then opens a new one).

    Instead of ``pool_pre_ping`` (a ``SELECT 1`` round trip before every transaction): an idle
    PostgreSQL connection has nothing to read unless the server ended it (a restart or a
    terminated backend sends an error and closes the socket), so a socket that is readable, or
    closed, means a dead connection. A connection idle for more than :data:`PING_IDLE_S` is also
    pinged, for peers that vanished without closing (a dropped network path)."""
    idle_since = record.info.pop(_CHECKED_IN, None)
    if idle_since is None:  # opened for this checkout
        return
    try:
        readable = _readable(dbapi_connection.fileno())
    except Exception as exc:  # closed: no file descriptor any more
        raise DisconnectionError(f"pooled connection unusable: {exc}") from exc
    if readable or dbapi_connection.closed:
        raise DisconnectionError("the server closed the pooled connection")
    if time.monotonic() - idle_since > PING_IDLE_S:
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_connection.rollback()
        except Exception as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def make_engine(url: str, *, postgres_pool_size: int | None = None, **kwargs: Any) -> Engine:
    """Returns an engine for ``url``; SQLite files get WAL, busy timeout and foreign keys;
    PostgreSQL pools keep ``postgres_pool_size`` connections open (default
    :data:`POSTGRES_POOL_SIZE`; as many again may open for a moment) and check them as
    :func:`_postgres_checkout` says."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    # A server that vanished without refusing (a dropped network path, a host powered off) would
    # hold each new connection for the operating system's TCP timeout, minutes; the URL's own
    # connect_timeout, when given, wins.
    if "connect_timeout" not in parsed.query:
        connect_args = dict(kwargs.get("connect_args") or {})
        connect_args.setdefault("connect_timeout", POSTGRES_CONNECT_TIMEOUT_S)
        kwargs["connect_args"] = connect_args
    # A pool smaller than the threads using it closes and reopens connections under load.
    kwargs.setdefault("pool_size", postgres_pool_size or POSTGRES_POOL_SIZE)
    kwargs.setdefault("max_overflow", kwargs["pool_size"])
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkin", _postgres_checkin)
    event.listen(engine, "checkout", _postgres_checkout)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Returns a session factory whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(
    factory: sessionmaker[Session], *, read_only: bool = False, autocommit: bool = False
) -> Iterator[Session]:
    """Yields a session that commits on success and rolls back on any exception.

    ``read_only=True`` promises that the block only reads: on SQLite its transaction begins
    deferred instead of taking the write lock (a write in it would fail with "database is
    locked" under contention, so never write in one).

    ``autocommit=True`` promises that the block writes with at most one statement (reads around
    it are fine): on PostgreSQL each statement then commits on its own, without the BEGIN and
    COMMIT round trips, which changes nothing for such a block (at READ COMMITTED every
    statement sees its own snapshot anyway), except that the write stays if the block raises
    after it. Read-only blocks run so too. SQLite keeps its transaction, which takes the write
    lock up front.
    """
    session = factory()
    try:
        options: dict[str, Any] = {}
        if read_only:
            options[READ_ONLY_OPTION] = True
        if (read_only or autocommit) and session.get_bind().dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        if options:
            session.connection(execution_options=options)
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Any:
    """Returns an Alembic ``Config`` built in code (no alembic.ini) for ``url``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["database_url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrades the database at ``url`` to ``revision`` (default: the newest)."""
    from alembic import command

    if make_url(url).get_backend_name() == "sqlite":
        make_engine(url).dispose()  # creates the parent folder of the file
    logger.info("migrating %s to %s", make_url(url).render_as_string(hide_password=True), revision)
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """Returns the database's Alembic revision, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def cli_transaction(database_url: str, change: Callable[[Session], T]) -> T:
    """Returns ``change(session)`` run in one transaction for a command: lookup and value errors
    (a service's refusals) and database errors become a ClickException saying what was expected."""
    import click
    from sqlalchemy.exc import SQLAlchemyError

    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return change(session)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"the database refused the change ({type(exc).__name__}); expected a migrated "
            "database: run 'dfmod migrate' first"
        ) from exc
    finally:
        engine.dispose()
