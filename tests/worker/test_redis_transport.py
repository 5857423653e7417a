"""The contract dfmod's Redis transport keeps (:mod:`worker.redis_transport`), on real Redis.

It overrides one private method of kombu's Redis channel (``_create_client``) so that one
redis-py client serves a channel's commands. Through kombu's and Celery's public API:

- publish, then get: bodies, headers and content type come back as sent, in order, and every
  publish and acknowledgement of a channel went through one client;
- ack: an acknowledged message is gone for any later consumer;
- redelivery: a message a consumer got but did not acknowledge comes back when its connection
  closes, and a channel reopened after a close works on its new pool;
- threads: publishes from many threads through one shared client all arrive;
- Celery: ``create_celery`` connects plain ``redis://`` URLs through this transport, and leaves
  ``rediss://`` to kombu's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from moderation.settings import load_settings
from worker.celery_app import create_celery
from worker.enqueue import TASK_SCORE, publish
from worker.redis_transport import SharedClientChannel, SharedClientTransport, broker_url_for

pytestmark = pytest.mark.integration


@pytest.fixture
def url(redis_url: str) -> Iterator[str]:
    redis.Redis.from_url(redis_url).flushdb()
    yield broker_url_for(redis_url)
    redis.Redis.from_url(redis_url).flushdb()


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def _publish(connection: Connection, name: str, bodies: list[Any]) -> None:
    with connection.Producer() as producer:
        for body in bodies:
            producer.publish(
                body,
                exchange=_queue(name).exchange,
                routing_key=name,
                declare=[_queue(name)],
                headers={"n": str(body)},
            )


def _get_all(connection: Connection, name: str) -> list[Any]:
    simple = connection.SimpleQueue(name)
    bodies = []
    try:
        while True:
            message = simple.get(timeout=0.5)
            bodies.append((message.payload, message.headers["n"], message.content_type))
            message.ack()
    except simple.Empty:
        return bodies
    finally:
        simple.close()


def test_publish_then_get__as_sent_in_order_through_one_client(url: str) -> None:
    with Connection(url) as connection:
        channel = connection.default_channel
        assert isinstance(channel, SharedClientChannel)
        clients = set()
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            clients |= {id(first), id(second)}
        _publish(connection, "contract", [{"i": i} for i in range(5)])
        got = _get_all(connection, "contract")
        with channel.conn_or_acquire() as after:
            clients.add(id(after))
    assert got == [({"i": i}, str({"i": i}), "application/json") for i in range(5)]
    assert len(clients) == 1


def test_ack__an_acknowledged_message_is_gone_for_later_consumers(url: str) -> None:
    with Connection(url) as connection:
        _publish(connection, "acked", ["one", "two"])
        assert [body for body, _, _ in _get_all(connection, "acked")] == ["one", "two"]
    with Connection(url) as later:
        assert _get_all(later, "acked") == []


def test_redelivery__unacknowledged_comes_back_when_the_connection_closes(url: str) -> None:
    with Connection(url) as connection:
        _publish(connection, "unacked", ["kept"])
        simple = connection.SimpleQueue("unacked")
        message = simple.get(timeout=5)
        assert message.payload == "kept"  # not acknowledged
        simple.close()
    with Connection(url) as again:
        assert [body for body, _, _ in _get_all(again, "unacked")] == ["kept"]


def test_a_reopened_channel_works_on_its_new_pool(url: str) -> None:
    with Connection(url) as connection:
        channel = connection.channel()
        with channel.conn_or_acquire() as before:
            assert before.ping()
        channel.close()  # drops its pools
        reopened = connection.channel()
        with reopened.conn_or_acquire() as after:
            assert after.ping() and after.connection_pool is reopened.pool
        reopened.close()


def test_many_threads_publish_through_one_client(url: str) -> None:
    with Connection(url) as connection:
        channel = connection.default_channel
        errors: list[BaseException] = []

        def push(start: int) -> None:
            try:
                for i in range(start, start + 25):
                    with channel.conn_or_acquire() as client:
                        client.lpush("threads", i)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=push, args=(n * 25,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        with channel.conn_or_acquire() as client:
            values = sorted(int(v) for v in client.lrange("threads", 0, -1))
    assert errors == [] and values == list(range(200))


def test_celery_connects_plain_redis_urls_through_this_transport(
    redis_url: str, tmp_path: Path
) -> None:
    settings = load_settings(environ={}, data_dir=tmp_path, broker_url=redis_url)
    app = create_celery(settings)
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, SharedClientTransport)
    publish(app, TASK_SCORE, "sub_contract")
    assert redis.Redis.from_url(redis_url).llen("dfmod") == 1
    redis.Redis.from_url(redis_url).flushdb()
    tls = create_celery(settings.replace(broker_url="rediss://127.0.0.1:6379/0"))
    assert tls.conf.broker_url.startswith("rediss://")
