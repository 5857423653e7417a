"""Every bad input gets an RFC 9457 problem that says what was expected."""

from __future__ import annotations

import io

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fixtures.database import TenantKeys
from tests.fixtures.flask_app import problem, upload
from tests.fixtures.media import flat_image


def test_missing_api_key_is_401_with_a_challenge(client: FlaskClient) -> None:
    response = client.get("/v1/submissions")
    body = problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in body["detail"]


@pytest.mark.parametrize(
    "header", ["Bearer dfm_abc_wrong", "Bearer nonsense", "Basic dXNlcjpwdw==", "Bearer "]
)
def test_bad_api_key_is_401(client: FlaskClient, tenant: TenantKeys, header: str) -> None:
    response = client.get("/v1/submissions", headers={"Authorization": header})
    problem(response, 401, "unauthorized")
    assert "WWW-Authenticate" in response.headers


def test_a_tampered_key_with_a_valid_prefix_is_401(client: FlaskClient, tenant: TenantKeys) -> None:
    key = tenant.api_key[:-1] + ("A" if tenant.api_key[-1] != "A" else "B")
    response = client.get("/v1/submissions", headers={"Authorization": f"Bearer {key}"})
    problem(response, 401, "unauthorized")


def test_malformed_json_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/submissions",
        data=b'{"media_url": "http://x',
        content_type="application/json",
        headers=auth,
    )
    body = problem(response, 400, "malformed-json")
    assert "expected an object" in body["detail"]


def test_absurdly_nested_json_is_400_not_500(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/submissions",
        data=b"[" * 100_000 + b"]" * 100_000,
        content_type="application/json",
        headers=auth,
    )
    problem(response, 400, "malformed-json")


def test_json_that_is_not_an_object_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/submissions", json=["http://127.0.0.1/"], headers=auth)
    problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/pdf", "video/x-msvideo", "application/x-www-form-urlencoded"],
)
def test_wrong_content_type_is_415(
    client: FlaskClient, auth: dict[str, str], content_type: str
) -> None:
    response = client.post(
        "/v1/submissions", data=flat_image(), content_type=content_type, headers=auth
    )
    body = problem(response, 415, "unsupported-media-type")
    assert "multipart/form-data" in body["detail"] and "application/json" in body["detail"]
    assert "image/*" in body["detail"] and "video/mp4" in body["detail"]


def test_missing_file_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/submissions",
        data={"external_id": "x"},
        content_type="multipart/form-data",
        headers=auth,
    )
    body = problem(response, 422, "validation-error")
    assert body["errors"] == [
        {"field": "file", "message": "expected exactly one 'file' part, got 0"}
    ]


def test_empty_file_and_two_files_are_422(client: FlaskClient, auth: dict[str, str]) -> None:
    empty = client.post("/v1/submissions", data=upload(b""), headers=auth)
    assert "empty" in problem(empty, 422, "validation-error")["detail"]
    two = client.post(
        "/v1/submissions",
        data={"file": [(io.BytesIO(b"a"), "a.png"), (io.BytesIO(b"b"), "b.png")]},
        headers=auth,
    )
    assert "exactly one" in problem(two, 422, "validation-error")["detail"]


def test_oversize_file_is_413(client: FlaskClient, auth: dict[str, str], app: Flask) -> None:
    limit = app.extensions["dfmod"].settings.max_upload_bytes
    response = client.post("/v1/submissions", data=upload(b"\xff" * (limit + 1)), headers=auth)
    body = problem(response, 413, "payload-too-large")
    assert body["max_bytes"] == limit


def test_oversize_body_is_413_before_parsing(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    too_big = app.config["MAX_CONTENT_LENGTH"] + 1
    response = client.post("/v1/submissions", data=upload(b"\0" * too_big), headers=auth)
    assert "expected a smaller upload" in problem(response, 413, "payload-too-large")["detail"]


def test_unknown_fields_are_422_json_and_multipart(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.post(
        "/v1/submissions",
        json={"media_url": "http://127.0.0.1:9/a.png", "callbackUrl": "http://127.0.0.1/"},
        headers=auth,
    )
    body = problem(response, 422, "validation-error")
    assert body["errors"][0]["field"] == "callbackUrl"
    assert "expected only media_url" in body["errors"][0]["message"]
    response = client.post("/v1/submissions", data=upload(flat_image(), colour="red"), headers=auth)
    assert problem(response, 422, "validation-error")["errors"][0]["field"] == "colour"


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ({}, "media_url", "required"),
        ({"media_url": "ftp://example.com/a.png"}, "media_url", "expected http or https"),
        ({"media_url": "not a url"}, "media_url", "expected http or https"),
        ({"media_url": "http://10.0.0.5/a.png"}, "media_url", "not a public address"),
        ({"media_url": "http://169.254.169.254/latest"}, "media_url", "not a public address"),
        ({"media_url": 42}, "media_url", "expected an http(s) URL"),
        (
            {"media_url": "http://127.0.0.1/a", "callback_url": "http://192.168.1.1/cb"},
            "callback_url",
            "not a public address",
        ),
        ({"media_url": "http://127.0.0.1/a", "metadata": [1]}, "metadata", "JSON object"),
        ({"media_url": "http://127.0.0.1/a", "external_id": 5}, "external_id", "string"),
        (
            {"media_url": "http://127.0.0.1/a", "metadata": {"x": "y" * 20000}},
            "metadata",
            "at most",
        ),
    ],
)
def test_invalid_fields_are_422(
    client: FlaskClient, auth: dict[str, str], payload: dict, field: str, fragment: str
) -> None:
    response = client.post("/v1/submissions", json=payload, headers=auth)
    body = problem(response, 422, "validation-error")
    messages = {e["field"]: e["message"] for e in body["errors"]}
    assert fragment in messages[field]


def test_bad_callback_url_in_multipart_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/submissions",
        data=upload(flat_image(), callback_url="http://0xa000001/"),  # 10.0.0.1 in hex
        headers=auth,
    )
    body = problem(response, 422, "validation-error")
    assert body["errors"][0]["field"] == "callback_url"


@pytest.mark.parametrize(
    "query", ["status=bogus", "limit=0", "limit=1000", "limit=x", "cursor=garbage", "sort=asc"]
)
def test_bad_list_parameters_are_422(client: FlaskClient, auth: dict[str, str], query: str) -> None:
    problem(client.get(f"/v1/submissions?{query}", headers=auth), 422, "validation-error")


def test_bad_idempotency_key_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/submissions",
        data=upload(flat_image()),
        headers={**auth, "Idempotency-Key": "k" * 256},
    )
    problem(response, 422, "validation-error")


def test_unknown_path_is_404_and_wrong_method_405(client: FlaskClient) -> None:
    problem(client.get("/v2/nothing"), 404, "not-found")
    response = client.delete("/v1/submissions")
    problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]


def test_unexpected_errors_are_500_without_internals(settings) -> None:
    from webhook_api import create_app

    app = create_app(settings, {"TESTING": True})

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret database password in a stack trace")

    response = app.test_client().get("/boom")
    body = problem(response, 500, "internal-error")
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in body["detail"]
    app.extensions["dfmod"].engine.dispose()
