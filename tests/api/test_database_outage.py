"""A PostgreSQL outage under the API: 503 problems with Retry-After, nothing half-stored, and the
same app serving again when the database is back (its pooled connections replaced).

The outage is real: the database refuses new connections (``ALLOW_CONNECTIONS false``) and every
backend serving it is terminated, as a restart or a failover does to the app's pool."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.db import migrate
from tests.fixtures.database import (
    create_test_tenant,
    fresh_postgres_database,
    set_postgres_outage,
)
from tests.fixtures.flask_app import accepted_upload, app_settings, problem, running_app
from tests.fixtures.media import jpeg, noise
from webhook_api.problems import DATABASE_RETRY_AFTER_S

pytestmark = pytest.mark.integration

INTERNALS = ("psycopg", "sqlalchemy", "OperationalError", "Traceback", "127.0.0.1", "5432", "/")


@pytest.fixture()
def database_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        migrate(url)
        yield url


def _unavailable(response) -> dict:
    body = problem(response, 503, "service-unavailable")
    assert response.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_S)
    assert "retr" in body["detail"] and "nothing was stored" in body["detail"]
    text_ = response.get_data(as_text=True)
    leaked = [word for word in INTERNALS if word in body["detail"] or word in body["title"]]
    assert not leaked, text_
    return body


def test_outage__503_with_retry_after__then_served_again(tmp_path: Path, database_url: str) -> None:
    _tenant_id, api_key, _secret = create_test_tenant(database_url)
    auth = {"Authorization": f"Bearer {api_key}"}
    data = jpeg(noise((96, 64)))
    settings = app_settings(tmp_path, database_url)
    with running_app(settings) as app:
        client = app.test_client()

        def submit():
            form = {"file": (io.BytesIO(data), "photo.jpg", "image/jpeg")}
            return client.post("/v1/submissions", data=form, headers=auth)

        first = accepted_upload(submit(), data)  # the pool now holds a live connection
        set_postgres_outage(database_url, down=True)
        try:
            _unavailable(submit())
            _unavailable(client.get("/v1/submissions", headers=auth))
            _unavailable(client.get(f"/v1/submissions/{first['id']}", headers=auth))
            ready = client.get("/readyz")
            assert (
                ready.status_code == 503 and ready.get_json()["checks"]["database"]["ok"] is False
            )
        finally:
            set_postgres_outage(database_url, down=False)
        second = accepted_upload(submit(), data)
        listed = client.get("/v1/submissions", headers=auth).get_json()["items"]
    # Only the two accepted uploads exist: the refused one left nothing behind.
    assert sorted(item["id"] for item in listed) == sorted([first["id"], second["id"]])
