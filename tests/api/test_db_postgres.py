"""The PostgreSQL session scopes: one-statement blocks commit without a transaction, and a pooled
connection the server closed is replaced without a ping before every checkout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from moderation.db import make_engine, make_session_factory, session_scope
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def factory(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(postgres_url, postgres_pool_size=3)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS scope_t")
        connection.exec_driver_sql("CREATE TABLE scope_t (x INTEGER)")
    yield make_session_factory(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE scope_t")
    engine.dispose()


def _count_elsewhere(factory: sessionmaker[Session]) -> int:
    with factory.kw["bind"].connect() as other:
        return int(other.execute(text("SELECT count(*) FROM scope_t")).scalar_one())


def test_autocommit_scope_commits_each_statement_and_a_plain_scope_at_its_end(factory) -> None:
    with session_scope(factory, autocommit=True) as session:
        session.execute(text("INSERT INTO scope_t VALUES (1)"))
        assert _count_elsewhere(factory) == 1  # committed by the statement itself
    with session_scope(factory) as session:
        session.execute(text("INSERT INTO scope_t VALUES (2)"))
        assert _count_elsewhere(factory) == 1  # not before the block commits
    assert _count_elsewhere(factory) == 2
    with pytest.raises(RuntimeError), session_scope(factory) as session:
        session.execute(text("INSERT INTO scope_t VALUES (3)"))
        raise RuntimeError("rolled back")
    assert _count_elsewhere(factory) == 2
    # The connection goes back to the pool in its own mode: the next plain scope is a transaction.
    with session_scope(factory) as session:
        session.execute(text("INSERT INTO scope_t VALUES (4)"))
        assert _count_elsewhere(factory) == 2


def test_a_pooled_connection_the_server_ended_is_replaced_at_checkout(
    factory, postgres_url: str
) -> None:
    engine = factory.kw["bind"]
    assert engine.pool.size() == 3
    with session_scope(factory, read_only=True) as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(postgres_url, poolclass=NullPool)
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

    def gone() -> bool:  # pg_terminate_backend only signals; the backend exits a moment later
        with admin.connect() as connection:
            query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            return connection.execute(query, {"pid": pid}).scalar_one() == 0

    wait_until(gone, timeout_s=10, message=f"backend {pid} still running after its termination")
    admin.dispose()
    for _ in range(3):  # whichever pooled connection each scope gets, none fails
        with session_scope(factory) as session:
            now_pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            session.execute(text("INSERT INTO scope_t VALUES (1)"))
        assert now_pid != pid
    assert _count_elsewhere(factory) == 3


def test_new_connections_give_up_after_a_timeout_unless_the_url_sets_its_own(
    postgres_url: str,
) -> None:
    from moderation.db import POSTGRES_CONNECT_TIMEOUT_S

    for url, expected in (
        (postgres_url, str(POSTGRES_CONNECT_TIMEOUT_S)),
        (f"{postgres_url}?connect_timeout=3", "3"),
    ):
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                info = connection.connection.dbapi_connection.info  # type: ignore[union-attr]
                assert info.get_parameters().get("connect_timeout") == expected
        finally:
            engine.dispose()
