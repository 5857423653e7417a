"""The API enqueues by task name after commit: the message really arrives on the broker.

No Celery mocks: the Redis test reads the queue list, the SQLite test reads kombu's message table.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from moderation.settings import Settings
from tests.fixtures.flask_app import upload
from tests.fixtures.media import flat_image
from webhook_api import create_app
from worker.enqueue import TASK_FETCH, TASK_SCORE

QUEUE = "dfmod"


def _decode(raw: str | bytes) -> tuple[str, list[Any]]:
    message = json.loads(raw)
    args = json.loads(base64.b64decode(message["body"]))[0]
    return message["headers"]["task"], args


def _post_both(settings: Settings, auth: dict[str, str]) -> tuple[str, str]:
    app = create_app(settings, {"TESTING": True})
    client = app.test_client()
    try:
        uploaded = client.post("/v1/submissions", data=upload(flat_image()), headers=auth)
        by_url = client.post(
            "/v1/submissions", json={"media_url": "http://127.0.0.1:9/a.png"}, headers=auth
        )
    finally:
        app.extensions["dfmod"].engine.dispose()
    assert uploaded.status_code == by_url.status_code == 202
    assert uploaded.get_json()["status"] == by_url.get_json()["status"] == "queued"
    return uploaded.get_json()["id"], by_url.get_json()["id"]


@pytest.mark.integration
def test_messages_arrive_on_redis(settings: Settings, auth: dict[str, str], redis_url: str) -> None:
    import redis

    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    upload_id, url_id = _post_both(settings.replace(broker_url=redis_url), auth)
    raw = broker.lrange(QUEUE, 0, -1)
    messages = sorted(_decode(m) for m in raw)
    assert messages == sorted([(TASK_SCORE, [upload_id]), (TASK_FETCH, [url_id])])
    # What monitoring tools show of a task (given by dfmod, not built by Celery's saferepr).
    reprs = sorted(
        (m["headers"]["argsrepr"], m["headers"]["kwargsrepr"]) for m in map(json.loads, raw)
    )
    assert reprs == sorted([(repr([upload_id]), "{}"), (repr([url_id]), "{}")])


def test_messages_arrive_on_the_sqlite_broker(
    settings: Settings, auth: dict[str, str], tmp_path: Path
) -> None:
    broker_file = tmp_path / "enqueue-broker.db"
    upload_id, url_id = _post_both(
        settings.replace(broker_url=f"sqla+sqlite:///{broker_file}"), auth
    )
    with sqlite3.connect(broker_file) as conn:
        rows = conn.execute(
            "SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
            "WHERE q.name = ?",
            (QUEUE,),
        ).fetchall()
    messages = sorted(_decode(payload) for (payload,) in rows)
    assert messages == sorted([(TASK_SCORE, [upload_id]), (TASK_FETCH, [url_id])])
