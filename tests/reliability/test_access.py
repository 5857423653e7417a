"""Access control: API keys, tenant isolation, dashboard login and CSRF, secrets at rest and logs.

The API tests use a real app on SQLite through Flask's client; the log test runs a full scoring and
callback flow through the real API, worker and Triton at DEBUG level and searches both processes'
logs for the tenant's webhook secret and API key.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from moderation.db import session_scope
from moderation.reviewers import create_reviewer
from tests.fixtures.flask_app import token
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import Stack, embedded_stack, triton_env
from tests.reliability.input_corpus import valid_bases
from tests.reliability.sqlite_app import bearer, make_app

PNG = valid_bases()["png_rgb"]


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    app, url = make_app(tmp_path)
    with session_scope(app.extensions["dfmod"].session_factory) as session:
        create_reviewer(session=session, name="alice", password="correct horse battery")
    yield app, url
    app.extensions["dfmod"].engine.dispose()


def _upload(client, headers: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    response = client.post(
        "/v1/submissions", data={"file": (io.BytesIO(PNG), "a.png")}, headers=headers
    )
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "Bearer dfm_000000000000_wrong"},
        {"Authorization": "Bearer not-a-key"},
    ],
)
def test_missing_or_wrong_key_is_401(api: tuple[Flask, str], headers: dict[str, str]) -> None:
    client = api[0].test_client()
    for method, path in (
        ("POST", "/v1/submissions"),
        ("GET", "/v1/submissions"),
        ("GET", "/v1/submissions/00000000-0000-0000-0000-000000000000"),
    ):
        response = client.open(path, method=method, headers=headers, json={"media_url": "x"})
        assert response.status_code == 401, (method, path, response.get_json())
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_another_tenants_submission_is_404(api: tuple[Flask, str]) -> None:
    app, url = api
    client = app.test_client()
    (_, owner), (_, other) = bearer(url, "owner"), bearer(url, "other")
    submission_id = _upload(client, owner)
    assert client.get(f"/v1/submissions/{submission_id}", headers=owner).status_code == 200
    assert client.get(f"/v1/submissions/{submission_id}", headers=other).status_code == 404
    listed = client.get("/v1/submissions", headers=other).get_json()
    assert submission_id not in str(listed)


def test_api_keys_are_stored_hashed(api: tuple[Flask, str]) -> None:
    url = api[1]
    _, headers = bearer(url, "hashed")
    key = headers["Authorization"].removeprefix("Bearer ")
    secret_part = key.split("_", 2)[2]
    engine = create_engine(url)
    with engine.connect() as conn:
        dump = repr(conn.execute(text("SELECT * FROM tenants")).fetchall())
    engine.dispose()
    assert "hashed" in dump and secret_part not in dump and key not in dump


def _fill(rule: str) -> str:
    """Returns a concrete path for a URL rule: 0 for int converters, a UUID otherwise."""
    rule = re.sub(r"<int:[^>]+>", "0", rule)
    return re.sub(r"<[^>]+>", "00000000-0000-0000-0000-000000000000", rule)


def _dashboard_get_routes(app: Flask) -> list[str]:
    routes = []
    for rule in app.url_map.iter_rules():
        public = rule.endpoint in ("review.login", "review.static")
        if rule.endpoint.startswith("review.") and "GET" in (rule.methods or ()) and not public:
            routes.append(_fill(rule.rule))
    return routes


def test_dashboard_pages_need_a_login_and_posts_need_csrf(api: tuple[Flask, str]) -> None:
    app = api[0]
    client = app.test_client()
    routes = _dashboard_get_routes(app)
    assert len(routes) >= 4, routes
    for path in routes:
        response = client.get(path)
        assert response.status_code == 302 and "/review/login" in response.headers["Location"], path
    post_rules = [
        r.rule
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith("review.") and "POST" in (r.methods or ())
    ]
    page = client.get("/review/login").get_data(as_text=True)
    csrf = token(page)
    login = {"name": "alice", "password": "correct horse battery"}
    assert client.post("/review/login", data=login).status_code == 400  # no token
    assert client.post("/review/login", data={**login, "csrf_token": "forged"}).status_code == 400
    assert client.post("/review/login", data={**login, "csrf_token": csrf}).status_code == 302
    assert client.get("/review/").status_code == 200
    for rule in post_rules:
        path = _fill(rule)
        assert client.post(path, data={"decision": "fake"}).status_code == 400, path


@pytest.fixture(scope="module")
def debug_stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**triton_env(triton_server), "DFMOD_LOG_LEVEL": "DEBUG"}
    started = embedded_stack(tmp_path_factory.mktemp("access-stack"), env)
    with started:
        yield started


@pytest.mark.integration
def test_secrets_never_reach_the_logs(
    debug_stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    keys = debug_stack.tenant()
    callback_receiver.secret = keys.secret
    response = debug_stack.submit_file(keys.api_key, PNG, callback_url=callback_receiver.url())
    assert response.status_code == 202, response.text
    body = debug_stack.wait_final(keys.api_key, response.json()["id"], timeout_s=60)
    assert body["status"] != "failed", body
    (delivered,) = callback_receiver.wait_for(1, timeout_s=30)
    assert delivered.signature_ok  # the secret was really used in this flow
    logs = debug_stack.log_tail(chars=10**7)
    assert "callback" in logs.lower() and len(logs) > 1000
    secret_body = keys.secret.removeprefix("whsec_")
    assert secret_body not in logs
    assert keys.api_key.split("_", 2)[2] not in logs
