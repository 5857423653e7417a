"""The embedded SQL broker: WAL pragmas, the queue-declaration race one process loses, and the
channel's single statements (FIFO, a fetched message leaves the table, no message twice)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import create_engine, text
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from tests.fixtures.database import fresh_postgres_database
from worker.sqlite_broker import SqlaChannel, broker_url_for


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


def test_tables_another_process_created_first_are_used_not_raised(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Connection(broker_url) as first:
        first.SimpleQueue("raced").close()  # "another process" created the tables
    kombu_sqla.Channel._engines.clear()  # this process opens the file afresh
    real_has_table = SQLiteDialect.has_table
    stale = {"left": 2}  # kombu_queue and kombu_message

    def has_table(self: Any, connection: Any, table_name: str, *args: Any, **kw: Any) -> bool:
        """The loser's checks ran before the winner's CREATE TABLE: they saw no table."""
        if stale["left"] and table_name.startswith("kombu_"):
            stale["left"] -= 1
            return False
        return bool(real_has_table(self, connection, table_name, *args, **kw))

    monkeypatch.setattr(SQLiteDialect, "has_table", has_table)
    with Connection(broker_url) as second:
        queue = second.SimpleQueue("raced")  # the CREATE TABLE now finds the table there
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert message.payload == {"n": 1} and stale["left"] == 0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Yields (broker URL, database URL) of an empty SQLite file or PostgreSQL database."""
    kombu_sqla.Channel._engines.clear()
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path / 'broker.db'}"
        yield broker_url_for(f"sqla+{database}"), database
    else:
        with fresh_postgres_database() as database:
            yield broker_url_for(f"sqla+{database}"), database
            for engine, _session in kombu_sqla.Channel._engines.values():
                engine.dispose()  # let the database be dropped
    kombu_sqla.Channel._engines.clear()


def _rows(database: str) -> list[tuple[Any, ...]]:
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT visible, payload FROM kombu_message")))
    finally:
        engine.dispose()


def test_messages_come_out_in_order_and_leave_the_table(any_broker: tuple[str, str]) -> None:
    broker, database = any_broker
    with Connection(broker) as connection:
        queue = connection.SimpleQueue("fifo")
        for n in range(5):
            queue.put({"n": n})
        assert len(_rows(database)) == 5
        got = []
        for _ in range(5):
            message = queue.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
        with pytest.raises(queue.Empty):
            queue.get(block=False)
        queue.close()
    assert got == [0, 1, 2, 3, 4]
    assert _rows(database) == []  # kombu's own channel kept all five, invisible, forever


def test_an_unacknowledged_message_is_published_again_when_its_channel_closes(
    any_broker: tuple[str, str],
) -> None:
    broker, _ = any_broker
    with Connection(broker) as first:
        queue = first.SimpleQueue("requeue")
        queue.put({"n": 1})
        assert queue.get(timeout=5).payload == {"n": 1}  # never acknowledged
        queue.close()
    with Connection(broker) as second:
        queue = second.SimpleQueue("requeue")
        again = queue.get(timeout=5)
        assert again.payload == {"n": 1}
        again.ack()
        queue.close()


def test_two_consumers_never_get_the_same_message(any_broker: tuple[str, str]) -> None:
    broker, database = any_broker
    count = 120
    with Connection(broker) as producer:
        queue = producer.SimpleQueue("shared")
        for n in range(count):
            queue.put({"n": n})
        queue.close()
    received: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def consume(into: list[int]) -> None:
        try:
            with Connection(broker) as connection:
                queue = connection.SimpleQueue("shared")
                while True:
                    try:
                        message = queue.get(block=False)
                    except queue.Empty:
                        break
                    into.append(message.payload["n"])
                    message.ack()
                queue.close()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(into,)) for into in received]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    every = received[0] + received[1]
    assert sorted(every) == list(range(count))  # each message once, none lost
    assert _rows(database) == []


def test_messages_kombu_left_delivered_are_deleted_when_the_broker_opens(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'broker.db'}"
    kombu_sqla.Channel._engines.clear()
    with Connection(f"sqla+{database}") as old:  # kombu's own channel, as an older dfmod ran
        queue = old.SimpleQueue("upgrade")
        for n in range(3):
            queue.put({"n": n})
        queue.get(timeout=5).ack()  # kombu keeps it with visible = 0
        queue.close()
    assert sorted(visible for visible, _ in _rows(database)) == [0, 1, 1]
    kombu_sqla.Channel._engines.clear()
    with Connection(broker_url_for(f"sqla+{database}")) as new:
        queue = new.SimpleQueue("upgrade")
        assert _rows(database) == [(1, row) for _, row in _rows(database)]  # only waiting ones
        got = []
        for _ in range(2):
            message = queue.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
        assert got == [1, 2]
        queue.close()
    kombu_sqla.Channel._engines.clear()
    assert _rows(database) == []


def test_a_publish_wakes_a_consumer_long_before_its_next_poll(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doorbell: a worker between polls gets a new message at once, not a poll later."""
    from worker.doorbell import Doorbell
    from worker.sqlite_broker import SqlaTransport

    monkeypatch.setattr(SqlaTransport, "polling_interval", 60.0)  # a poll would come far too late
    rung: list[bool] = []
    waiting = threading.Event()  # set each time the consumer starts waiting on the bell
    real_wait = Doorbell.wait

    def wait(self: Doorbell, timeout: float) -> None:
        waiting.set()
        rung.append(real_wait(self, timeout))

    monkeypatch.setattr(Doorbell, "wait", wait)
    got: list[Any] = []
    with Connection(broker_url) as consumer_connection, Connection(broker_url) as producer:
        consumer_connection.SimpleQueue("bell").close()  # declared before anyone waits
        channel = consumer_connection.default_channel

        def on_message(body: Any, message: Any) -> None:
            got.append(body)
            message.ack()

        consumer = consumer_connection.Consumer(
            consumer_connection.SimpleQueue("bell").queue, callbacks=[on_message], channel=channel
        )
        consumer.consume()
        with pytest.raises(TimeoutError):
            consumer_connection.drain_events(timeout=0.3)  # empty: waits on the bell, times out
        waiting.clear()
        waiter = threading.Thread(target=lambda: consumer_connection.drain_events(timeout=30))
        waiter.start()
        assert waiting.wait(10)  # the consumer is now waiting between polls
        producer.SimpleQueue("bell").put({"n": 1})
        waiter.join(30)
        consumer.cancel()
    assert got == [{"n": 1}]
    assert rung[-1] is True  # woken by the publish, not by the end of a wait


def test_the_bell_is_named_after_the_broker_file_and_rings_without_a_listener(
    tmp_path: Path,
) -> None:
    from worker.doorbell import Doorbell, bell_name, doorbell_for

    assert doorbell_for(f"sqlite:///{tmp_path / 'a.db'}") is doorbell_for(
        f"sqlite:///{tmp_path}/./a.db"
    )
    assert doorbell_for("postgresql://127.0.0.1/x") is None
    assert doorbell_for("sqlite://") is None
    assert bell_name(str(tmp_path / "a.db")) != bell_name(str(tmp_path / "b.db"))
    lonely = Doorbell(str(tmp_path / "nobody-listens.db"))
    lonely.ring()  # no listener: nothing raised
    first, second = Doorbell(str(tmp_path / "c.db")), Doorbell(str(tmp_path / "c.db"))
    try:
        assert first._listen() is not None
        assert second._listen() is None  # a second consumer keeps polling
        second.ring()
        first.wait(10)  # returns on the ring
    finally:
        first.close()
        second.close()
