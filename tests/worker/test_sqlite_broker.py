"""The embedded SQLite broker: WAL pragmas, and the queue-declaration race one process loses."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import sqlalchemy as kombu_sqla

from worker.celery_app import SqlaChannel, broker_url_for


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    kombu_sqla.Channel._engines.clear()  # a fresh engine for this file
    yield broker_url_for(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    kombu_sqla.Channel._engines.clear()


def test_messages_round_trip_on_a_wal_file(broker_url: str, tmp_path: Path) -> None:
    with Connection(broker_url) as connection:
        queue = connection.SimpleQueue("dfmod-test")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
    with sqlite3.connect(tmp_path / "broker.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_queue_row_inserted_by_another_process_first_is_read_not_raised(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Connection(broker_url) as first, Connection(broker_url) as second:
        first.SimpleQueue("raced").close()  # "another process" created the row
        channel = second.default_channel
        assert isinstance(channel, SqlaChannel)
        real_query = channel.session.query
        stale = {"left": 2}  # kombu looks twice (before and after taking its lock)

        class StaleRead:
            """The loser's SELECTs ran before the winner committed: they saw no row."""

            def __init__(self, query: Any) -> None:
                self.query = query

            def filter(self, *args: Any) -> StaleRead:
                self.query = self.query.filter(*args)
                return self

            def first(self) -> Any:
                if stale["left"]:
                    stale["left"] -= 1
                    return None
                return self.query.first()

        monkeypatch.setattr(channel.session, "query", lambda *a: StaleRead(real_query(*a)))
        row = channel._get_or_create("raced")  # kombu's INSERT now hits the unique name
        assert row.name == "raced" and stale["left"] == 0
