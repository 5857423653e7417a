"""Limits: per-tenant rate limit (429 with Retry-After, counted across processes) and body size.

The rate limit counts the tenant's submission rows in the database, so two separate app instances
(standing in for two gunicorn workers) share one budget, and one tenant's burst does not limit
another. The global default (600 per minute) applies unless ``dfmod tenant set-rate-limit`` gives
a tenant its own number (0: unlimited). Oversized uploads and JSON bodies end in 413 problem
documents.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from moderation.settings import load_settings
from tests.fixtures.database import fresh_postgres_database
from tests.reliability.input_corpus import valid_bases
from tests.reliability.sqlite_app import bearer, make_app
from webhook_api.cli import tenant_group

PNG = valid_bases()["png_rgb"]
LIMIT = 5


def _post(app: Flask, headers: dict[str, str], data: bytes = PNG):  # type: ignore[no-untyped-def]
    form = {"file": (io.BytesIO(data), "a.png")}
    return app.test_client().post("/v1/submissions", data=form, headers=headers)


def test_rate_limit_is_per_tenant_and_shared_by_processes(tmp_path: Path) -> None:
    first, url = make_app(tmp_path, rate_limit_per_minute=LIMIT)
    second, _ = make_app(tmp_path, rate_limit_per_minute=LIMIT)  # another API process
    try:
        (_, busy), (_, quiet) = bearer(url, "busy"), bearer(url, "quiet")
        answers = [_post(first if i % 2 else second, busy).status_code for i in range(LIMIT)]
        assert answers == [202] * LIMIT
        refused = _post(first, busy)
        assert refused.status_code == 429
        assert refused.mimetype == "application/problem+json"
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert refused.get_json()["retry_after_s"] == retry_after
        assert _post(second, busy).status_code == 429
        assert _post(second, quiet).status_code == 202  # another tenant is not affected
        # At the limit, an Idempotency-Key replay of an accepted request is still answered.
        keyed = {**quiet, "Idempotency-Key": "k1"}
        accepted = _post(first, keyed)
        assert accepted.status_code == 202
        assert [_post(first, quiet).status_code for _ in range(LIMIT - 2)] == [202] * (LIMIT - 2)
        assert _post(first, quiet).status_code == 429
        replay = _post(second, keyed)
        assert replay.status_code == 202
        assert replay.get_json()["id"] == accepted.get_json()["id"]
    finally:
        for app in (first, second):
            app.extensions["dfmod"].engine.dispose()


def test_rate_limit_default_is_600_and_0_turns_it_off(tmp_path: Path) -> None:
    assert load_settings(environ={}).rate_limit_per_minute == 600
    app, url = make_app(tmp_path, rate_limit_per_minute=0)
    try:
        _, headers = bearer(url)
        assert {_post(app, headers).status_code for _ in range(LIMIT + 3)} == {202}
    finally:
        app.extensions["dfmod"].engine.dispose()


def _set_rate_limit(url: str, name: str, *args: str) -> None:
    result = CliRunner().invoke(
        tenant_group, ["set-rate-limit", name, *args], env={"DFMOD_DATABASE_URL": url}
    )
    assert result.exit_code == 0, result.output


def _app_on(root: Path, url: str, **overrides: Any) -> Flask:
    return make_app(root, database_url=url, **overrides)[0]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yields an empty database URL: an SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dfmod.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


def test_tenant_override_beats_the_default(tmp_path: Path, database_url: str) -> None:
    app = _app_on(tmp_path, database_url)  # the shipped default: 600 per minute
    try:
        (_, strict), (_, normal) = bearer(database_url, "strict"), bearer(database_url, "normal")
        _set_rate_limit(database_url, "strict", "--per-minute", "3")
        assert [_post(app, strict).status_code for _ in range(3)] == [202] * 3
        refused = _post(app, strict)
        assert refused.status_code == 429
        assert "at most 3 per minute" in refused.get_json()["detail"]
        assert [_post(app, normal).status_code for _ in range(LIMIT + 1)] == [202] * (LIMIT + 1)
        # Back on the default (600), the same tenant is accepted again at once.
        _set_rate_limit(database_url, "strict", "--default")
        assert _post(app, strict).status_code == 202
    finally:
        app.extensions["dfmod"].engine.dispose()


def test_tenant_limit_0_is_unlimited_under_a_global_limit(
    tmp_path: Path, database_url: str
) -> None:
    app = _app_on(tmp_path, database_url, rate_limit_per_minute=2)
    try:
        (_, free), (_, capped) = bearer(database_url, "free"), bearer(database_url, "capped")
        _set_rate_limit(database_url, "free", "--per-minute", "0")
        assert [_post(app, free).status_code for _ in range(LIMIT)] == [202] * LIMIT
        assert [_post(app, capped).status_code for _ in range(3)] == [202, 202, 429]
        # A tenant's own limit above the global one also wins.
        _set_rate_limit(database_url, "capped", "--per-minute", "4")
        assert [_post(app, capped).status_code for _ in range(3)] == [202, 202, 429]
    finally:
        app.extensions["dfmod"].engine.dispose()


def test_oversized_bodies_are_413(tmp_path: Path) -> None:
    app, url = make_app(tmp_path, max_upload_bytes=64 * 1024)
    try:
        _, headers = bearer(url)
        big = _post(app, headers, PNG + b"\x00" * (64 * 1024))
        assert big.status_code == 413 and big.mimetype == "application/problem+json"
        huge = app.test_client().post(
            "/v1/submissions",
            data=b'{"media_url": "' + b"a" * (2 * 1024 * 1024) + b'"}',
            headers=headers,
            content_type="application/json",
        )
        assert huge.status_code == 413 and huge.mimetype == "application/problem+json"
    finally:
        app.extensions["dfmod"].engine.dispose()
