"""Property-based fuzzing of preprocessing and of the API's JSON inputs (bounded examples).

``load_image`` must answer random bytes and mutated valid images with an array or a known
refusal; the submission endpoint must answer arbitrary JSON, headers and content types with a
problem document or 202, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.preprocess import REASONS, ImageLimits, MediaRejected, load_image
from tests.fixtures.database import create_test_tenant
from tests.reliability.input_corpus import valid_bases
from tests.reliability.sqlite_app import make_app

LIMITS = ImageLimits()
BASES = valid_bases()
FUZZ = settings(max_examples=150, deadline=None, derandomize=True)
API_FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_load(data: bytes) -> None:
    try:
        array = load_image(data, LIMITS)
    except MediaRejected as exc:
        assert exc.reason in REASONS
        return
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _check_load(data)


@FUZZ
@given(st.sampled_from(sorted(BASES)), st.binary(min_size=4, max_size=4096))
def test_magic_number_then_random_bytes(base: str, tail: bytes) -> None:
    _check_load(BASES[base][:16] + tail)


@FUZZ
@given(
    st.sampled_from(sorted(BASES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10**6),
)
def test_mutated_valid_images(base: str, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(BASES[base])
    for position, value in edits:
        data[position % len(data)] = value
    _check_load(bytes(data[: max(1, len(data) - cut % len(data))]))


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app, url = make_app(tmp_path_factory.mktemp("fuzz-api"))
    app.config["FUZZ_KEY"] = create_test_tenant(url)[1]
    yield app
    app.extensions["dfmod"].engine.dispose()


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app: Flask) -> FlaskClient:
    return fuzz_app.test_client()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
URLS = st.sampled_from(
    [
        "http://127.0.0.1/x",
        "http://[::1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://169.254.169.254/latest",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pw@example.com/",
        "http://localhost:1/",
        "http://",
        "http://[::ffff:10.0.0.1]/",
        "https://exa mple.com/",
    ]
) | st.text(max_size=60)
BODIES = (
    st.fixed_dictionaries(
        {},
        optional={
            "media_url": URLS | JSON_VALUES,
            "callback_url": URLS | JSON_VALUES,
            "external_id": st.text(max_size=300) | JSON_VALUES,
            "metadata": JSON_VALUES,
        },
    )
    | JSON_VALUES
)


def _assert_problem(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, response.get_data(as_text=True)  # type: ignore[attr-defined]
    if status >= 400:
        assert response.mimetype == "application/problem+json"  # type: ignore[attr-defined]
        body = response.get_json()  # type: ignore[attr-defined]
        assert body["status"] == status and body["detail"]


@API_FUZZ
@given(BODIES)
def test_api_json_bodies_never_500(fuzz_client: FlaskClient, fuzz_app: Flask, body: object) -> None:
    headers = {"Authorization": f"Bearer {fuzz_app.config['FUZZ_KEY']}"}
    response = fuzz_client.post(
        "/v1/submissions", data=json.dumps(body), headers=headers, content_type="application/json"
    )
    _assert_problem(response)
    # Nothing aimed at a private, unparsable or non-http address is ever accepted.
    media_url = body.get("media_url") if isinstance(body, dict) else None
    if isinstance(media_url, str) and media_url in URLS_BLOCKED:
        assert response.status_code == 422


URLS_BLOCKED = {
    "http://127.0.0.1/x",
    "http://[::1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://169.254.169.254/latest",
    "file:///etc/passwd",
    "http://localhost:1/",
    "http://[::ffff:10.0.0.1]/",
}


@API_FUZZ
@given(
    st.binary(max_size=512),
    st.sampled_from(
        [
            "application/json",
            "text/plain",
            "multipart/form-data",
            "",
            "application/x+json",
            "multipart/form-data; boundary=x",
        ]
    ),
    st.sampled_from(["", "Bearer", "Bearer ", "Basic abc", "Bearer wrong", "bearer  x y", None]),
    st.sampled_from(
        [
            "/v1/submissions",
            "/v1/submissions/abc",
            "/v1/submissions/%00",
            "/v1/submissions?limit=-1&cursor=zz",
            "/v1/submissions?limit=99999",
        ]
    ),
    st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_api_raw_requests_never_500(
    fuzz_client: FlaskClient,
    fuzz_app: Flask,
    raw: bytes,
    content_type: str,
    authorization: str | None,
    path: str,
    method: str,
) -> None:
    key = fuzz_app.config["FUZZ_KEY"]
    headers = {"Authorization": authorization or f"Bearer {key}"} if authorization != "" else {}
    response = fuzz_client.open(
        path, method=method, data=raw, headers=headers, content_type=content_type or None
    )
    _assert_problem(response)
    if authorization in ("Bearer", "Basic abc", "Bearer wrong") and response.status_code != 405:
        assert response.status_code in (401, 404)
