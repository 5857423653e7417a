"""Dashboard fixtures: the app on a real SQLite file with a reviewer and needs_review items."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from moderation.blobs import BlobStore
from moderation.db import make_engine, make_session_factory, session_scope
from moderation.models import MediaKind, Status, Submission, Verdict
from moderation.reviewers import create_reviewer
from moderation.settings import Settings
from tests.fixtures.flask_app import app_settings, running_app
from tests.fixtures.services import DATABASE_KINDS, create_test_tenant, empty_database_url

PASSWORD = "correct horse battery"


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: an SQLite file, or the session's PostgreSQL."""
    return empty_database_url(request, tmp_path)


@pytest.fixture()
def settings(tmp_path: Path, database_url: str) -> Settings:
    return app_settings(tmp_path, database_url)


@pytest.fixture()
def app(settings: Settings) -> Iterator[Flask]:
    with running_app(settings) as application:
        with session_scope(application.extensions["dfmod"].session_factory) as session:
            create_reviewer(session=session, name="alice", password=PASSWORD)
        yield application


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def add_item(settings: Settings, *, p_fake: float, data: bytes = b"\x89PNG-ish", **kw: str) -> str:
    """Adds a scored needs_review submission with stored media; returns its id."""
    tenant_id, _key, _secret = create_test_tenant(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            sub = Submission(
                tenant_id=tenant_id,
                status=Status.NEEDS_REVIEW,
                media_kind=MediaKind.UPLOAD,
                blob_sha256=BlobStore(settings.blob_dir).put(data),
                content_type="image/png",
                callback_url=kw.get("callback_url", "http://127.0.0.1:9/hook"),
            )
            session.add(sub)
            session.flush()
            session.add(
                Verdict(
                    submission_id=sub.id,
                    logit=0.0,
                    p_fake=p_fake,
                    decision=Status.NEEDS_REVIEW,
                    model_name="deepfake_detector",
                    model_version=kw.get("version", "1"),
                    pass_below=0.2,
                    flag_at=0.8,
                )
            )
            return sub.id
    finally:
        engine.dispose()


def token(page: str) -> str:
    """Returns the CSRF token embedded in a rendered page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client: FlaskClient, password: str = PASSWORD) -> str:
    """Logs alice in; returns the session's CSRF token."""
    page = client.get("/review/login").get_data(as_text=True)
    response = client.post(
        "/review/login", data={"name": "alice", "password": password, "csrf_token": token(page)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return token(client.get("/review/").get_data(as_text=True))
