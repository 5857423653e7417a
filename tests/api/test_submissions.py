"""POST/GET /v1/submissions through the Flask test client on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from moderation.blobs import BlobStore
from tests.fixtures.database import create_test_tenant
from tests.fixtures.flask_app import accepted_upload, upload
from tests.fixtures.media import flat_image


def test_upload_is_accepted_stored_and_queued(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    data = flat_image()
    response = client.post(
        "/v1/submissions",
        data=upload(data, external_id="post-1", metadata='{"user": 7}'),
        headers=auth,
    )
    body = accepted_upload(response, data)
    assert body["external_id"] == "post-1" and body["metadata"] == {"user": 7}
    assert response.headers["Location"] == f"/v1/submissions/{body['id']}"
    store = BlobStore(app.extensions["dfmod"].settings.blob_dir)
    assert store.get(body["media"]["sha256"]) == data

    polled = client.get(response.headers["Location"], headers=auth)
    assert polled.status_code == 200
    assert polled.get_json()["id"] == body["id"] and polled.get_json()["verdict"] is None


def test_media_url_submission_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/submissions",
        json={"media_url": "http://127.0.0.1:9/x.png", "callback_url": "http://127.0.0.1:9/cb"},
        headers=auth,
    )
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["media"]["kind"] == "url" and body["media"]["url"] == "http://127.0.0.1:9/x.png"
    assert body["callback_url"] == "http://127.0.0.1:9/cb"
    assert body["status"] == "queued"


def test_another_tenants_submission_is_404(
    client: FlaskClient, auth: dict[str, str], database_url: str
) -> None:
    created = client.post("/v1/submissions", data=upload(flat_image()), headers=auth).get_json()
    _, other_key, _ = create_test_tenant(database_url)
    other = {"Authorization": f"Bearer {other_key}"}
    response = client.get(f"/v1/submissions/{created['id']}", headers=other)
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert client.get("/v1/submissions", headers=other).get_json()["items"] == []
    assert client.get(f"/v1/submissions/{created['id']}", headers=auth).status_code == 200


def test_idempotency_same_body_replays_different_body_conflicts(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "order-42"}
    data = flat_image()
    first = client.post("/v1/submissions", data=upload(data, external_id="a"), headers=headers)
    again = client.post("/v1/submissions", data=upload(data, external_id="a"), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]

    changed = client.post("/v1/submissions", data=upload(data, external_id="b"), headers=headers)
    assert changed.status_code == 409
    problem = changed.get_json()
    assert problem["type"] == "https://dfmod.dev/problems/idempotency-conflict"
    assert "different request body" in problem["detail"]
    listed = client.get("/v1/submissions", headers=auth).get_json()["items"]
    assert [item["id"] for item in listed] == [first.get_json()["id"]]


def test_idempotency_keys_are_per_tenant(
    client: FlaskClient, auth: dict[str, str], database_url: str
) -> None:
    _, other_key, _ = create_test_tenant(database_url)
    body = {"media_url": "http://127.0.0.1:9/x.png"}
    first = client.post(
        "/v1/submissions", json=body, headers={**auth, "Idempotency-Key": "k"}
    ).get_json()
    second = client.post(
        "/v1/submissions",
        json=body,
        headers={"Authorization": f"Bearer {other_key}", "Idempotency-Key": "k"},
    ).get_json()
    assert first["id"] != second["id"]


def test_list_filters_by_status_and_paginates_with_a_cursor(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    ids = [
        client.post(
            "/v1/submissions", data=upload(flat_image(color=(i, 0, 0))), headers=auth
        ).get_json()["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    url: str | None = "/v1/submissions?limit=2"
    pages = 0
    while url:
        page = client.get(url, headers=auth).get_json()
        seen += [item["id"] for item in page["items"]]
        url = page["next"]
        pages += 1
    assert pages == 3
    assert seen == list(reversed(ids))
    queued = client.get("/v1/submissions?status=queued", headers=auth).get_json()["items"]
    assert len(queued) == 5
    assert client.get("/v1/submissions?status=failed", headers=auth).get_json()["items"] == []


def test_broker_down_still_accepts_and_leaves_received(
    settings, auth: dict[str, str], tmp_path: Path
) -> None:
    from webhook_api import create_app

    app = create_app(settings.replace(broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    response = app.test_client().post("/v1/submissions", data=upload(flat_image()), headers=auth)
    assert response.status_code == 202
    assert response.get_json()["status"] == "received"
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'dfmod_submissions{status="received"} 1.0' in metrics
    app.extensions["dfmod"].engine.dispose()


def test_metadata_round_trips_as_json(client: FlaskClient, auth: dict[str, str]) -> None:
    meta = {"nested": {"list": [1, 2, 3]}, "text": "ünïcode"}
    body = client.post(
        "/v1/submissions",
        json={"media_url": "http://127.0.0.1:9/a.png", "metadata": meta},
        headers=auth,
    ).get_json()
    fetched = client.get(f"/v1/submissions/{body['id']}", headers=auth).get_json()
    assert fetched["metadata"] == meta
    assert json.loads(json.dumps(fetched["created_at"])).endswith("+00:00")


def test_concurrent_requests_with_one_idempotency_key_create_one_submission(
    app: Flask, auth: dict[str, str]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = flat_image(color=(1, 2, 3))
    headers = {**auth, "Idempotency-Key": "burst"}

    def post(_: int) -> tuple[int, str]:
        response = app.test_client().post("/v1/submissions", data=upload(data), headers=headers)
        return response.status_code, response.get_json()["id"]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(post, range(6)))
    assert {code for code, _ in results} == {202}
    assert len({sid for _, sid in results}) == 1
    listed = app.test_client().get("/v1/submissions", headers=auth).get_json()["items"]
    assert len(listed) == 1


def test_get_shows_the_verdict_and_latest_review(
    client: FlaskClient, auth: dict[str, str], app: Flask
) -> None:
    from moderation.db import session_scope
    from moderation.models import Review, Status, Submission, Verdict

    created = client.post("/v1/submissions", data=upload(flat_image()), headers=auth).get_json()
    with session_scope(app.extensions["dfmod"].session_factory) as session:
        session.add(
            Verdict(
                submission_id=created["id"],
                logit=1.5,
                p_fake=0.62,
                decision=Status.NEEDS_REVIEW,
                model_name="deepfake_detector",
                model_version="3",
                pass_below=0.3,
                flag_at=0.8,
            )
        )
        session.add(Review(submission_id=created["id"], reviewer="ana", label="fake"))
        session.get(Submission, created["id"]).status = Status.DECIDED
    body = client.get(f"/v1/submissions/{created['id']}", headers=auth).get_json()
    assert body["status"] == "decided"
    assert body["verdict"]["p_fake"] == 0.62 and body["verdict"]["label"] == "fake"
    assert body["verdict"]["model"] == {"name": "deepfake_detector", "version": "3"}
    assert body["verdict"]["thresholds"] == {"pass_below": 0.3, "flag_at": 0.8}
    assert body["review"]["label"] == "fake"
    listed = client.get("/v1/submissions?status=decided", headers=auth).get_json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]


def test_a_failure_after_the_commit_still_answers_202(
    client: FlaskClient, auth: dict[str, str], monkeypatch
) -> None:
    import webhook_api.submissions as views

    def broken(**_: object) -> None:
        raise RuntimeError("database went away after the commit")

    # The broker refuses the message and the database then refuses to mark the row received:
    # the submission is committed (queued, for the sweeper), so the answer is still 202.
    monkeypatch.setattr(views, "_enqueue", lambda view: False)
    monkeypatch.setattr(views, "mark_received", broken)
    response = client.post("/v1/submissions", data=upload(flat_image()), headers=auth)
    assert response.status_code == 202
    assert response.get_json()["status"] == "queued"
    fetched = client.get(response.headers["Location"], headers=auth).get_json()
    assert fetched["status"] == "queued"


def test_upload_bodies_are_parsed_in_memory_up_to_the_threshold() -> None:
    import io

    from werkzeug.test import EnvironBuilder

    from webhook_api import IN_MEMORY_BODY_BYTES, UploadRequest

    def file_stream(size: int) -> object:
        data = {"file": (io.BytesIO(b"x" * size), "big.jpg")}
        request = UploadRequest(EnvironBuilder(method="POST", data=data).get_environ())
        upload = request.files["file"]
        assert len(upload.read()) == size
        return upload.stream

    assert isinstance(file_stream(2 * 1024 * 1024), io.BytesIO)  # werkzeug alone: spooled to disk
    assert not isinstance(file_stream(IN_MEMORY_BODY_BYTES + 1), io.BytesIO)


def test_create_submission_returns_what_get_submission_reads_back(app: Flask, tenant) -> None:
    from moderation.db import session_scope
    from moderation.models import MediaKind
    from moderation.submissions import create_submission, get_submission

    factory = app.extensions["dfmod"].session_factory
    with session_scope(factory) as session:
        created = create_submission(
            session=session,
            tenant_id=tenant.id,
            media_kind=MediaKind.UPLOAD,
            blob_sha256="ab" * 32,
            size_bytes=3,
            filename="a.jpg",
            content_type="image/jpeg",
            callback_url="http://127.0.0.1:9/cb",
            external_id="e-1",
            metadata={"k": [1, "ü"]},
            queued=True,
        )
    with session_scope(factory, read_only=True) as session:
        fetched = get_submission(session=session, submission_id=created.id, tenant_id=tenant.id)
    assert fetched == created
    assert created.status == "queued" and created.id.startswith("sub_")
