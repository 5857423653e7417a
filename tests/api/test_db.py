"""The SQLite session scopes: writers take the lock when they begin, readers never wait for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, text

from moderation.db import make_engine, make_session_factory, session_scope


@pytest.fixture
def factory(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield make_session_factory(engine)
    engine.dispose()


def test_writing_scope_begins_immediate_and_reading_scope_deferred(factory) -> None:
    statements: list[str] = []
    event.listen(factory.kw["bind"], "before_cursor_execute", lambda *a: statements.append(a[2]))
    with session_scope(factory, read_only=True) as session:
        session.execute(text("SELECT count(*) FROM t"))
    with session_scope(factory) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    assert statements == [
        "BEGIN",
        "SELECT count(*) FROM t",
        "BEGIN IMMEDIATE",
        "INSERT INTO t VALUES (1)",
    ]


def test_a_reader_does_not_wait_for_a_writer_holding_the_lock(factory) -> None:
    writer = factory()
    writer.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock, uncommitted
    # A scope beginning IMMEDIATE would wait here for the lock until the busy timeout.
    try:
        with session_scope(factory, read_only=True) as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        writer.rollback()
        writer.close()
