"""API test fixtures: the app on a real SQLite file and on the real PostgreSQL, a test client."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from moderation.settings import Settings
from tests.fixtures.flask_app import app_settings, running_app
from tests.fixtures.services import DATABASE_KINDS, create_test_tenant, empty_database_url


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Returns a migrated, empty database URL: an SQLite file or the session's PostgreSQL."""
    return empty_database_url(request, tmp_path)


@pytest.fixture()
def api_settings(database_url: str, tmp_path: Path) -> Settings:
    """Returns settings for an API on ``database_url`` with an SQLite broker in tmp."""
    return app_settings(
        tmp_path, database_url, outbound_allowlist="127.0.0.0/8,::1/128", max_upload_bytes=64 * 1024
    )


@pytest.fixture()
def app(api_settings: Settings) -> Iterator[Flask]:
    with running_app(api_settings) as application:
        yield application


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def tenant(database_url: str) -> dict[str, str]:
    tenant_id, api_key, secret = create_test_tenant(database_url)
    return {"id": tenant_id, "api_key": api_key, "secret": secret}


@pytest.fixture()
def auth(tenant: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant['api_key']}"}


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    """Returns a small valid PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, **fields: Any) -> dict[str, Any]:
    """Returns a multipart form with ``file`` and extra fields for the test client."""
    return {"file": (io.BytesIO(data), "image.png", "image/png"), **fields}


def accepted_upload(response: Any, data: bytes) -> dict[str, Any]:
    """Asserts a 202 for an upload of ``data``, queued, its media described by the bytes sent;
    returns the body."""
    assert response.status_code == 202, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["status"] == "queued"
    assert body["media"] == {
        "kind": "upload",
        "url": None,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
    }
    return body
