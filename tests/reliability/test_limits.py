"""Limits: per-tenant rate limit (429 with Retry-After, counted across processes) and body size.

The rate limit counts the tenant's submission rows in the database, so two separate app instances
(standing in for two gunicorn workers) share one budget, and one tenant's burst does not limit
another. Oversized uploads and JSON bodies end in 413 problem documents.
"""

from __future__ import annotations

import io
from pathlib import Path

from flask import Flask

from tests.reliability.input_corpus import valid_bases
from tests.reliability.sqlite_app import bearer, make_app

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


def test_rate_limit_off_by_default(tmp_path: Path) -> None:
    app, url = make_app(tmp_path)
    try:
        _, headers = bearer(url)
        assert {_post(app, headers).status_code for _ in range(LIMIT + 3)} == {202}
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
