"""Engines, sessions and migrations: how every process talks to the one database.

SQLite connections get WAL, a busy timeout, foreign keys and ``BEGIN IMMEDIATE`` (read-only scopes
begin deferred); PostgreSQL needs nothing special. No engine exists at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option marking a transaction that only reads (see session_scope).
READ_ONLY_OPTION = "dfmod_read_only"


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


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Returns an engine for ``url``; SQLite files get WAL, busy timeout and foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Returns a session factory whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session], *, read_only: bool = False) -> Iterator[Session]:
    """Yields a session that commits on success and rolls back on any exception.

    ``read_only=True`` promises that the block only reads: on SQLite its transaction begins
    deferred instead of taking the write lock (a write in it would fail with "database is
    locked" under contention, so never write in one).
    """
    session = factory()
    try:
        if read_only:
            session.connection(execution_options={READ_ONLY_OPTION: True})
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
