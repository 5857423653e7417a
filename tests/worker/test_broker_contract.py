"""The contract dfmod's embedded SQLite broker keeps, through kombu's and Celery's public API.

:mod:`worker.sqlite_broker` overrides private parts of kombu's SQLAlchemy transport (``_get``,
``_put``, ``_get_or_create``, ``drain_events``, ``Channel._engines``). These tests use only the
public API (``Connection``, ``Producer``, ``Consumer``, ``SimpleQueue``, ``send_task``) and real
processes, so a kombu or Celery release that changes what the overrides rely on fails here:

- publish, then get: the body, its headers and content type come back as sent, in order;
- ack: an acknowledged message is gone, for this consumer and any later one;
- redelivery: a message a consumer got but did not acknowledge comes back when that consumer's
  connection closes (a worker shutting down, a consumer exiting); a consumer process killed
  outright takes its fetched message with it (the fetch deletes the row, kombu's unacked list is
  in memory), which the leases and the sweeper recover from the database;
- restart: what one process published, a new process on the same file gets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import sqlalchemy as kombu_sqla

from moderation.settings import Settings
from worker.celery_app import create_celery
from worker.enqueue import TASK_SCORE
from worker.sqlite_broker import SqlaTransport, broker_url_for

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """Yields the kombu URL of a fresh SQLite broker file (engines from other tests forgotten)."""
    kombu_sqla.Channel._engines.clear()
    yield broker_url_for(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    for engine, _session in kombu_sqla.Channel._engines.values():
        engine.dispose()
    kombu_sqla.Channel._engines.clear()


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def _get_all(connection: Connection, name: str) -> list[Any]:
    """Returns the bodies of every waiting message of ``name`` (each acknowledged)."""
    simple = connection.SimpleQueue(name)
    bodies = []
    try:
        while True:
            message = simple.get(block=False)
            bodies.append(message.payload)
            message.ack()
    except simple.Empty:
        return bodies
    finally:
        simple.close()


def _python(code: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """Starts a fresh interpreter running ``code`` (the broker imported, its URL in argv)."""
    prelude = "import sys\nimport worker.sqlite_broker\nfrom kombu import Connection\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        cwd=ROOT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **popen,
    )


def test_publish_then_get__body_headers_and_order_as_sent(broker: str) -> None:
    with Connection(broker) as connection:
        assert type(connection.transport) is SqlaTransport  # dfmod's transport, not kombu's
        producer = connection.Producer()
        for n in range(3):
            producer.publish(
                {"n": n},
                exchange=_queue("contract").exchange,
                routing_key="contract",
                declare=[_queue("contract")],
                serializer="json",
                headers={"task": "dfmod.test", "n": n},
            )
        got: list[tuple[Any, Any, str]] = []

        def on_message(body: Any, message: Any) -> None:
            got.append((body, message.headers, message.content_type))
            message.ack()

        with connection.Consumer(_queue("contract"), callbacks=[on_message]):
            while len(got) < 3:
                connection.drain_events(timeout=DEADLINE_S)
        with (
            connection.Consumer(_queue("contract"), callbacks=[on_message]),
            pytest.raises(TimeoutError),  # empty: drain_events times out (socket.timeout)
        ):
            connection.drain_events(timeout=0.2)
    assert got == [({"n": n}, {"task": "dfmod.test", "n": n}, "application/json") for n in range(3)]


def test_ack__an_acknowledged_message_is_gone_for_every_later_consumer(broker: str) -> None:
    with Connection(broker) as connection:
        simple = connection.SimpleQueue("acked")
        simple.put({"n": 1})
        simple.put({"n": 2})
        first = simple.get(timeout=DEADLINE_S)
        first.ack()
        assert first.acknowledged
        simple.close()
    with Connection(broker) as later:
        assert _get_all(later, "acked") == [{"n": 2}]  # 1 is gone, 2 still waits
        assert _get_all(later, "acked") == []


def test_redelivery__an_unacked_message_returns_when_its_consumer_closes(
    broker: str,
) -> None:
    with Connection(broker) as connection:
        connection.SimpleQueue("redeliver").put({"n": 1})
    consumer = _python(
        """
        with Connection(sys.argv[1]) as connection:
            queue = connection.SimpleQueue("redeliver")
            message = queue.get(timeout=60)
            print(message.payload["n"], flush=True)
            raise SystemExit(3)  # a task that failed: the connection closes, nothing acked
        """,
        broker,
        stdout=subprocess.PIPE,
    )
    out, _ = consumer.communicate(timeout=DEADLINE_S)
    assert (consumer.returncode, out.strip()) == (3, "1")
    with Connection(broker) as second:
        simple = second.SimpleQueue("redeliver")
        again = simple.get(timeout=DEADLINE_S)
        assert again.payload == {"n": 1}
        again.ack()
        simple.close()
        assert _get_all(second, "redeliver") == []


def test_redelivery__a_killed_consumer_takes_its_fetched_message_with_it(broker: str) -> None:
    """No broker-side redelivery after SIGKILL: recovery is the leases' and the sweeper's job
    (``worker.leases``); a kombu change that started redelivering would be seen here."""
    with Connection(broker) as connection:
        simple = connection.SimpleQueue("killed")
        simple.put({"n": 1})
        simple.put({"n": 2})
        simple.close()
    consumer = _python(
        """
        import time
        with Connection(sys.argv[1]) as connection:
            message = connection.SimpleQueue("killed").get(timeout=60)
            print(message.payload["n"], flush=True)
            time.sleep(600)  # holds it unacknowledged until killed
        """,
        broker,
        stdout=subprocess.PIPE,
    )
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "1"  # fetched, not acknowledged
    finally:
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(DEADLINE_S)
    with Connection(broker) as after:
        assert _get_all(after, "killed") == [{"n": 2}]


def test_restart__a_new_process_on_the_same_file_gets_what_another_published(
    broker: str,
) -> None:
    publisher = _python(
        """
        with Connection(sys.argv[1]) as connection:
            queue = connection.SimpleQueue("restart")
            for n in range(3):
                queue.put({"n": n})
            queue.close()
        """,
        broker,
    )
    assert publisher.wait(DEADLINE_S) == 0
    consumer = _python(
        """
        with Connection(sys.argv[1]) as connection:
            queue = connection.SimpleQueue("restart")
            message = queue.get(timeout=60)
            message.ack()
            print(message.payload["n"], flush=True)
            queue.close()
        """,
        broker,
        stdout=subprocess.PIPE,
    )
    out, _ = consumer.communicate(timeout=DEADLINE_S)
    assert (consumer.returncode, out.strip()) == (0, "0")
    with Connection(broker) as this_process:  # and a third process sees the rest, in order
        assert _get_all(this_process, "restart") == [{"n": 1}, {"n": 2}]


def test_celery_send_task__arrives_as_a_task_message_on_the_default_queue(
    tmp_path: Path,
) -> None:
    """Celery's publishing path (``send_task``, the protocol-2 message) goes through this broker:
    what the API sends, a worker's consumer reads back with the task's name and arguments."""
    kombu_sqla.Channel._engines.clear()
    settings = Settings(
        data_dir=tmp_path, broker_url=f"sqla+sqlite:///{tmp_path / 'celery-broker.db'}"
    )
    app = create_celery(settings)
    try:
        sent = app.send_task(TASK_SCORE, args=["sub_contract"])
        with app.connection_for_read() as connection:
            simple = connection.SimpleQueue(app.conf.task_default_queue)
            message = simple.get(timeout=DEADLINE_S)
            args, kwargs, _embed = message.decode()
            assert message.headers["task"] == TASK_SCORE
            assert message.headers["id"] == sent.id
            assert (args, kwargs) == (["sub_contract"], {})
            message.ack()
            simple.close()
    finally:
        app.close()
        for engine, _session in kombu_sqla.Channel._engines.values():
            engine.dispose()
        kombu_sqla.Channel._engines.clear()
