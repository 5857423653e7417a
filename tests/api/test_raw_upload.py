"""POST /v1/submissions with the media itself as the body and the fields as query parameters."""

from __future__ import annotations

import io
import json
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient

from moderation.blobs import BlobStore
from moderation.db import session_scope
from moderation.models import Submission
from tests.fixtures.flask_app import accepted_upload, problem, upload
from tests.fixtures.media import flat_image


def _post(client: FlaskClient, data: bytes, headers: dict[str, str], **params: str):
    query = f"?{urlencode(params)}" if params else ""
    return client.post(
        f"/v1/submissions{query}",
        data=data,
        headers={**headers, "Content-Type": headers.get("Content-Type", "image/png")},
    )


def test_raw_upload_is_accepted_and_stored_as_sent(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    data = flat_image()
    response = _post(client, data, auth)
    body = accepted_upload(response, data)
    assert body["callback_url"] is None and body["external_id"] is None
    assert body["metadata"] == {}
    state = app.extensions["dfmod"]
    assert BlobStore(state.settings.blob_dir).get(body["media"]["sha256"]) == data
    with session_scope(state.session_factory, read_only=True) as session:
        row = session.get(Submission, body["id"])
        assert row is not None and row.content_type == "image/png" and row.filename is None
    polled = client.get(response.headers["Location"], headers=auth).get_json()
    assert polled == body


def test_fields_come_from_query_parameters(client: FlaskClient, auth: dict[str, str]) -> None:
    meta = {"user": 7, "tags": ["a", "ü"]}
    response = _post(
        client,
        flat_image(),
        auth,
        callback_url="http://127.0.0.1:9/cb",
        external_id="post-1",
        metadata=json.dumps(meta),
    )
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["callback_url"] == "http://127.0.0.1:9/cb"
    assert body["external_id"] == "post-1" and body["metadata"] == meta


@pytest.mark.parametrize(
    "content_type",
    [
        "image/jpeg",
        "image/webp; q=1",
        "image/heic",
        "image/heif",
        "image/avif",
        "video/mp4",
        "video/webm",
        "application/octet-stream",
    ],
)
def test_media_types_the_worker_decides_on_are_accepted(
    client: FlaskClient, auth: dict[str, str], content_type: str
) -> None:
    response = _post(client, b"\x00\x00\x00\x18ftypmp42", {**auth, "Content-Type": content_type})
    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"callbackUrl": "http://127.0.0.1:9/"}, "callbackUrl", "unknown query parameter"),
        ({"file": "x"}, "file", "expected only callback_url, external_id, metadata"),
        ({"metadata": "{not json"}, "metadata", "expected a JSON object as text"),
        ({"metadata": "[1, 2]"}, "metadata", "expected a JSON object"),
        ({"callback_url": "ftp://example.com/cb"}, "callback_url", "expected http or https"),
        ({"callback_url": "http://10.0.0.5/cb"}, "callback_url", "not a public address"),
        ({"external_id": "x" * 201}, "external_id", "at most 200 characters"),
    ],
)
def test_bad_query_parameters_are_422_naming_the_field(
    client: FlaskClient, auth: dict[str, str], params: dict[str, str], field: str, fragment: str
) -> None:
    body = problem(_post(client, flat_image(), auth, **params), 422, "validation-error")
    assert [error["field"] for error in body["errors"]] == [field]
    assert fragment in body["errors"][0]["message"]


def test_a_repeated_query_parameter_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/submissions?external_id=a&external_id=b",
        data=flat_image(),
        headers={**auth, "Content-Type": "image/png"},
    )
    body = problem(response, 422, "validation-error")
    assert body["errors"] == [
        {"field": "external_id", "message": "given 2 times; expected it once"}
    ]


def test_an_empty_body_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    body = problem(_post(client, b"", auth), 422, "validation-error")
    assert body["errors"] == [
        {"field": "(body)", "message": "the body is empty; expected the media's bytes"}
    ]


def test_an_oversize_body_is_413_with_the_upload_limit(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    limit = app.extensions["dfmod"].settings.max_upload_bytes
    assert _post(client, b"\xff" * limit, auth).status_code == 202
    body = problem(_post(client, b"\xff" * (limit + 1), auth), 413, "payload-too-large")
    assert body["max_bytes"] == limit and f"expected at most {limit}" in body["detail"]


def test_an_oversize_body_without_a_length_is_413(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    limit = app.extensions["dfmod"].settings.max_upload_bytes
    response = client.post(
        "/v1/submissions",
        input_stream=io.BytesIO(b"\xff" * (limit + 1)),
        headers={**auth, "Content-Type": "image/png"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert problem(response, 413, "payload-too-large")["max_bytes"] == limit


def test_a_type_that_is_not_media_is_415_saying_what_is_expected(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = _post(client, b"%PDF-1.7", {**auth, "Content-Type": "application/pdf"})
    body = problem(response, 415, "unsupported-media-type")
    assert "'application/pdf' is not accepted" in body["detail"]
    for expected in ("image/*", "video/mp4", "video/quicktime", "application/octet-stream"):
        assert expected in body["detail"]


def test_idempotency_key_replays_raw_bodies_and_refuses_a_different_one(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "raw-1"}
    data = flat_image(color=(9, 9, 9))
    first = _post(client, data, headers, external_id="a")
    again = _post(client, data, headers, external_id="a")
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    for changed in (
        _post(client, data + b"\0", headers, external_id="a"),
        _post(client, data, headers, external_id="b"),
    ):
        assert "different request body" in problem(changed, 409, "idempotency-conflict")["detail"]
    listed = client.get("/v1/submissions", headers=auth).get_json()["items"]
    assert [item["id"] for item in listed] == [first.get_json()["id"]]


def test_the_same_request_as_multipart_or_raw_is_one_request(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "either-shape"}
    data = flat_image(color=(1, 1, 1))
    meta = '{"b": 2, "a": 1}'
    raw = _post(client, data, headers, external_id="x", metadata=meta)
    form = client.post(
        "/v1/submissions",
        data=upload(data, external_id="x", metadata='{"a": 1, "b": 2}'),
        headers=headers,
    )
    assert raw.status_code == form.status_code == 202
    assert form.headers["Idempotent-Replayed"] == "true"
    assert form.get_json() == raw.get_json()


def test_query_parameters_beside_a_multipart_or_json_body_are_read(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    form = client.post("/v1/submissions?external_id=x", data=upload(flat_image()), headers=auth)
    assert form.status_code == 202, form.get_data(as_text=True)
    assert form.get_json()["external_id"] == "x"
    as_json = client.post(
        "/v1/submissions?external_id=y&metadata=%7B%22a%22%3A1%7D",
        json={"media_url": "http://127.0.0.1:9/a.png"},
        headers=auth,
    )
    assert as_json.status_code == 202, as_json.get_data(as_text=True)
    assert (as_json.get_json()["external_id"], as_json.get_json()["metadata"]) == ("y", {"a": 1})


def test_a_field_in_the_body_and_the_query_takes_the_body_value(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    form = client.post(
        "/v1/submissions?external_id=x", data=upload(flat_image(), external_id="y"), headers=auth
    )
    assert form.status_code == 202, form.get_data(as_text=True)
    assert form.get_json()["external_id"] == "y"
