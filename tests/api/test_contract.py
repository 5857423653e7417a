"""The API contract defined once: the models in moderation.api_schema validate, serialise and are
the OpenAPI document's schemas; the document and /docs are generated from them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
from typing import Any

import jsonschema_rs
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation import api_schema as s
from moderation.outbox import event_payload
from moderation.submissions import (
    SubmissionView,
    VerdictView,
    decode_cursor,
    encode_cursor,
)
from webhook_api.openapi import document

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)


def _view(verdict: VerdictView | None = None) -> SubmissionView:
    return SubmissionView(
        id="sub_1",
        tenant_id="ten_1",
        status="auto_flagged" if verdict else "queued",
        media_kind="upload",
        media_url=None,
        blob_sha256="ab" * 32,
        size_bytes=10,
        callback_url=None,
        external_id="post-1",
        metadata={"a": 1},
        failure_reason=None,
        failure_detail=None,
        created_at=NOW,
        updated_at=NOW,
        completed_at=NOW if verdict else None,
        verdict=verdict,
    )


def _verdict(**extra: Any) -> VerdictView:
    return VerdictView(0.9, 2.2, "auto_flagged", "deepfake_detector", "1", 0.3, 0.8, NOW, **extra)


def _schema_validator(name: str) -> Any:
    doc = document()
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    )


def test_submission_json_keeps_todays_fields_and_matches_its_schema() -> None:
    body = _view(_verdict()).to_json()
    assert body["created_at"] == "2026-11-30T12:00:00+00:00"  # today's timestamp format
    assert body["verdict"]["model"] == {"name": "deepfake_detector", "version": "1"}
    assert body["verdict"]["label"] == "fake" and body["verdict"]["video"] is None
    assert body["verdict"]["decision_reason"] == "model"  # rows stored before reasons were
    assert body["verdict"]["signals"] == {
        "model": {
            "name": "deepfake_detector",
            "version": "1",
            "p_fake": 0.9,
            "label": "fake",
            "decision": "auto_flagged",
        },
        "match": None,
        "provenance": None,
    }
    for name in ("explanation", "models"):
        assert body["verdict"][name] is None
    _schema_validator("SubmissionOut").validate(body)
    _schema_validator("SubmissionOut").validate(_view().to_json())


def test_every_event_a_callback_carries_matches_the_documented_webhook() -> None:
    failed = dataclasses.replace(
        _view(), status="failed", failure_reason="unsupported_media", failure_detail="text"
    )
    cases = [(s.EVENT_SCORED, _view(_verdict())), (s.EVENT_FAILED, failed)]
    cases += [(s.EVENT_DECIDED, dataclasses.replace(_view(_verdict()), status="decided"))]
    assert sorted(event for event, _ in cases) == sorted(document()["webhooks"])
    for event, view in cases:
        payload = json.loads(json.dumps(event_payload(event, view)))  # as the outbox stores it
        _schema_validator("WebhookEvent").validate(payload)
        assert payload["type"] == event and payload["data"]["status"] == view.status
    wrong = {**event_payload(s.EVENT_SCORED, _view()), "type": "submission.deleted"}
    assert not _schema_validator("WebhookEvent").is_valid(json.loads(json.dumps(wrong)))


def test_the_verdict_carries_the_signals_fields_with_open_sub_objects() -> None:
    match = {
        "bank": "acme",
        "bank_id": "bank_1",
        "verdict": "fake",
        "distance": 3,
        "signal_type": "pdq",
        "entry_id": 7,
        "origin": {"source": "review", "submission": "sub_0", "reviewer": "alice"},
        "later": True,
    }
    verdict = _verdict(
        decision_reason="bank_match:fake",
        signals={"model": {"p_fake": 0.9, "decision": "auto_flagged"}, "match": match},
        explanation={"cam": [[0.1] * 7] * 7, "regions": [{"box": [0, 0, 4, 4], "share": 0.4}]},
        models=[{"name": "deepfake_detector", "version": "1", "p_fake": 0.9, "latency_ms": 4.0}],
    )
    body = _view(verdict).to_json()["verdict"]
    assert body["decision_reason"] == "bank_match:fake"
    assert body["signals"]["match"]["later"] is True  # keys not yet in the model pass through
    assert body["explanation"]["regions"][0]["share"] == 0.4
    assert body["models"][0]["latency_ms"] == 4.0
    _schema_validator("VerdictOut").validate(body)


def test_the_document_takes_its_limits_from_the_models() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    media_url = schemas["MediaUrlRequest"]["properties"]["media_url"]
    assert media_url["maxLength"] == s.MAX_URL_LENGTH and media_url["pattern"] == s.URL_PATTERN
    listing = {p["name"]: p for p in doc["paths"]["/v1/submissions"]["get"]["parameters"]}
    assert listing["limit"]["schema"]["maximum"] == s.MAX_PAGE_SIZE
    assert listing["cursor"]["schema"]["pattern"] == s.CURSOR_PATTERN
    assert listing["status"]["schema"]["enum"] == list(s.Status.ALL)
    post = doc["paths"]["/v1/submissions"]["post"]
    assert set(post["requestBody"]["content"]) >= set(s.RAW_TYPES)
    link = post["responses"]["202"]["links"]["GetSubmission"]
    assert link["parameters"] == {"submission_id": "$response.body#/id"}


@settings(max_examples=200, deadline=None)
@given(cursor=st.from_regex(s.CURSOR_PATTERN, fullmatch=True))
def test_every_cursor_the_schema_allows_is_accepted(cursor: str) -> None:
    created_at, submission_id = decode_cursor(cursor)
    assert created_at.tzinfo is not None and submission_id


def test_cursors_round_trip_and_old_ones_still_decode() -> None:
    cursor = encode_cursor(NOW, "sub_abc")
    assert re.fullmatch(s.CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == (NOW, "sub_abc")
    old = "WyIyMDI2LTExLTMwVDEyOjAwOjAwKzAwOjAwIiwgInN1Yl9hYmMiXQ"  # base64 of the former JSON
    assert decode_cursor(old) == (NOW, "sub_abc")


def test_a_pattern_valid_cursor_lists_instead_of_422(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for cursor in ("0.0", "9999999999999999999.zzz", "1764504000000000.sub_x"):
        response = client.get(f"/v1/submissions?cursor={cursor}", headers=auth)
        assert response.status_code == 200, response.get_json()
    bad = client.get("/v1/submissions?cursor=abc", headers=auth)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "cursor"


def test_docs_page_renders_the_document_without_external_assets(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    doc = document()
    for path, item in [*doc["paths"].items(), *doc["webhooks"].items()]:
        for method in item:
            assert f'id="{item[method]["operationId"]}"' in html, (method, path)
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    assert not re.search(r"<(script|link|img)\b", html)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def test_text_with_nul_characters_is_stored_or_refused_never_a_500(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    url = "http://127.0.0.1:9/a.png"
    named = client.post(
        "/v1/submissions", json={"media_url": url, "external_id": "a\u0000b"}, headers=auth
    )
    assert named.status_code == 422 and named.get_json()["errors"][0]["field"] == "external_id"
    meta = {"k\u0000": "v\u0000"}
    stored = client.post("/v1/submissions", json={"media_url": url, "metadata": meta}, headers=auth)
    assert stored.status_code == 202, stored.get_data(as_text=True)
    assert stored.get_json()["metadata"] == meta
    upload = {"file": (io.BytesIO(b"bytes"), "a\u0000.png", "image/png")}
    form = client.post("/v1/submissions", data=upload, headers=auth)
    assert form.status_code == 202, form.get_data(as_text=True)


def test_ipv6_literal_urls_pass_the_schema_and_the_guard(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = {"media_url": "http://[::1]:9/a.png"}  # the test app allow-lists ::1
    response = client.post("/v1/submissions", json=body, headers=auth)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert re.search(s.URL_PATTERN, body["media_url"])
