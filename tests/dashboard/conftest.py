"""Dashboard fixtures: the app on a real SQLite file with a reviewer and needs_review items."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from moderation.blobs import BlobStore
from moderation.db import make_engine, make_session_factory, migrate, session_scope
from moderation.models import Base, MediaKind, Status, Submission, Verdict
from moderation.reviewers import create_reviewer
from moderation.settings import Settings, load_settings
from tests.fixtures.services import create_test_tenant, fresh_postgres_database
from webhook_api import create_app

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def dashboard_postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database of the dashboard tests' own (truncated per test)."""
    with fresh_postgres_database() as url:
        migrate(url)
        yield url


def _truncate(url: str) -> None:
    engine = make_engine(url)
    try:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: an SQLite file, or the dashboard tests' PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dfmod.db'}"
        migrate(url)
        return url
    url = request.getfixturevalue("dashboard_postgres_url")
    _truncate(url)
    return url


@pytest.fixture()
def settings(tmp_path: Path, database_url: str) -> Settings:
    url = database_url
    return load_settings(
        environ={},
        data_dir=tmp_path / "var",
        database_url=url,
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        outbound_allowlist="127.0.0.0/8",
        triton_grpc_port=1,
    )


@pytest.fixture()
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings, {"TESTING": True})
    with session_scope(application.extensions["dfmod"].session_factory) as session:
        create_reviewer(session=session, name="alice", password=PASSWORD)
    yield application
    application.extensions["dfmod"].engine.dispose()


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
