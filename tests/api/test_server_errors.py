"""What a real gunicorn process answers before and around the application: problem+json always.

``dfmod api`` runs here as a subprocess on a migrated SQLite file; raw sockets send what no HTTP
client library would (an overlong request line, oversized headers, a malformed request line).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from moderation.api_schema import MAX_HEADER_FIELD_BYTES, MAX_REQUEST_LINE_BYTES
from moderation.db import migrate
from moderation.settings import PROJECT_ROOT
from tests.fixtures.database import create_test_tenant
from tests.fixtures.stack import free_port
from webhook_api.openapi import SERVER_STATUSES, document

pytestmark = pytest.mark.integration
KEY: list[str] = []
ROOT: list[Path] = []


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a running ``dfmod api``; its database holds one tenant (see :data:`KEY`)."""
    root: Path = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    migrate(f"sqlite:///{root / 'dfmod.db'}")
    KEY.append(create_test_tenant(f"sqlite:///{root / 'dfmod.db'}", "gunicorn")[1])
    env = {
        **os.environ,
        "DFMOD_DATA_DIR": str(root),
        "DFMOD_DATABASE_URL": f"sqlite:///{root / 'dfmod.db'}",
        "DFMOD_BROKER_URL": f"sqla+sqlite:///{root / 'broker.db'}",
        "DFMOD_API_PORT": str(port),
        "DFMOD_API_WORKERS": "1",
        "DFMOD_MAX_UPLOAD_BYTES": "1000",
    }
    log = open(root / "api.log", "wb")  # noqa: SIM115 - closed below
    out = open(root / "stdout.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moderation.cli", "api"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=out,
        stderr=log,
    )
    ROOT.append(root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "api.log").read_text()
            try:
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:
                assert time.monotonic() < deadline, (root / "api.log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        out.close()


def _raw(
    url: str, request: bytes, *, then_close: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Sends ``request`` as is (closing the sending side after it with ``then_close``) and
    returns the answer's status, headers and body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        if then_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _problem(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/problem+json"), headers
    problem = json.loads(body)
    assert problem["status"] == expected and problem["type"].startswith("https://dfmod.dev/")
    assert problem["detail"] and "<html" not in body.decode()
    return problem


def test_an_overlong_request_line_is_a_414_problem(api: str) -> None:
    path = "/healthz?x=" + "a" * MAX_REQUEST_LINE_BYTES
    status, headers, body = _raw(api, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    problem = _problem(status, headers, body, 414)
    assert problem["type"].endswith("/uri-too-long")


def test_oversized_or_too_many_header_fields_are_431_problems(api: str) -> None:
    big = "a" * (MAX_HEADER_FIELD_BYTES + 10)
    status, headers, body = _raw(api, f"GET /healthz HTTP/1.1\r\nX-Big: {big}\r\n\r\n".encode())
    _problem(status, headers, body, 431)
    many = "".join(f"X-{i}: v\r\n" for i in range(200))
    status, headers, body = _raw(api, f"GET /healthz HTTP/1.1\r\n{many}\r\n".encode())
    _problem(status, headers, body, 431)


def test_a_malformed_request_is_a_400_problem(api: str) -> None:
    status, headers, body = _raw(api, b"GET /healthz HTTP/9.9 extra\r\n\r\n")
    _problem(status, headers, body, 400)


def test_unsupported_transfer_coding_and_expectation_are_problems(api: str) -> None:
    request = b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n"
    _problem(*_raw(api, request), 501)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"
    _problem(*_raw(api, request), 417)


def test_framework_errors_through_gunicorn_are_problems(api: str) -> None:
    missing = requests.get(f"{api}/nowhere", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    wrong = requests.delete(f"{api}/v1/submissions", timeout=10)
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    assert wrong.headers["Content-Type"].startswith("application/problem+json")
    large = requests.post(
        f"{api}/v1/submissions",
        data=b"x" * 400_000,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {KEY[0]}"},
        timeout=10,
    )
    assert large.status_code == 413
    assert large.headers["Content-Type"].startswith("application/problem+json")


def test_every_operation_documents_the_server_statuses() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status in SERVER_STATUSES:
                response = operation["responses"][str(status)]
                if (path, status) == ("/readyz", 503):  # its own answer: which check failed
                    assert "application/json" in response["content"]
                    continue
                assert "application/problem+json" in response["content"], (path, method, status)
                if status == 503:  # the database away for a moment: when to try again
                    assert response["headers"]["Retry-After"]["required"] is True
    get_one = doc["paths"]["/v1/submissions/{submission_id}"]["get"]
    assert "404" in get_one["responses"]


def test_the_server_logs_to_stderr_only(api: str) -> None:
    assert requests.get(f"{api}/healthz", timeout=10).ok
    deadline = time.monotonic() + 10
    while b'"GET /healthz' not in (ROOT[0] / "api.log").read_bytes():
        assert time.monotonic() < deadline, "no access log line on standard error"
        time.sleep(0.1)
    assert (ROOT[0] / "stdout.log").read_bytes() == b""


def _submissions() -> int:
    with sqlite3.connect(ROOT[0] / "dfmod.db") as db:
        return int(db.execute("SELECT count(*) FROM submissions").fetchone()[0])


def _upload(kind: str, payload: bytes) -> tuple[bytes, str]:
    """Returns (body, Content-Type) carrying ``payload``: a multipart form or the raw bytes."""
    if kind == "raw":
        return payload, "image/png"
    body = (
        b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n--bnd--\r\n"
    )
    return body, "multipart/form-data; boundary=bnd"


@pytest.mark.parametrize("kind", ["multipart", "raw"])
def test_a_body_shorter_than_its_content_length_is_a_400_and_stores_nothing(
    api: str, kind: str
) -> None:
    """The upload is read straight from the server's input (webhook_api.multipart.read_input):
    a client that stops sending early gets Werkzeug's 400, as before, and nothing is queued."""
    body, content_type = _upload(kind, b"\x89PNG" * (100 if kind == "multipart" else 150))
    head = (
        f"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY[0]}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    before = _submissions()
    problem = _problem(*_raw(api, head + body[: len(body) // 2], then_close=True), 400)
    assert problem["type"].endswith("/bad-request")
    whole = requests.post(
        f"{api}/v1/submissions",
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {KEY[0]}"},
        timeout=10,
    )
    assert whole.status_code == 202, whole.text
    assert _submissions() == before + 1


def test_an_upload_sent_after_100_continue_is_read_whole(api: str) -> None:
    """curl asks ``Expect: 100-continue`` before bodies over 1 MB: the body follows the interim
    answer and is read straight from the server's input like any other."""
    body = b"\x89PNG" * 150
    head = (
        f"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY[0]}\r\n"
        f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    host, port = api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = sock.recv(1)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]


@pytest.mark.parametrize("kind", ["multipart", "raw"])
def test_a_chunked_upload_is_read_whole_and_refused_over_the_limit(api: str, kind: str) -> None:
    """Clients that stream a body they do not measure (``requests`` with a generator, for one)
    send it chunked, without a Content-Length: it is read whole, and one over
    DFMOD_MAX_UPLOAD_BYTES (1000 here) is a 413 that stores nothing."""

    def chunked(body: bytes) -> Iterator[bytes]:
        for start in range(0, len(body), 97):
            yield body[start : start + 97]

    headers = {"Authorization": f"Bearer {KEY[0]}"}
    payload = b"\x89PNG" + bytes(range(256)) * 3  # 772 bytes
    body, content_type = _upload(kind, payload)
    before = _submissions()
    accepted = requests.post(
        f"{api}/v1/submissions",
        data=chunked(body),
        headers={**headers, "Content-Type": content_type},
        timeout=10,
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.request.headers.get("Transfer-Encoding") == "chunked"
    media = accepted.json()["media"]
    assert media["sha256"] == hashlib.sha256(payload).hexdigest()
    assert media["size_bytes"] == len(payload)
    assert _submissions() == before + 1

    body, content_type = _upload(kind, payload * 2)
    refused = requests.post(
        f"{api}/v1/submissions",
        data=chunked(body),
        headers={**headers, "Content-Type": content_type},
        timeout=10,
    )
    problem = _problem(
        refused.status_code, dict(refused.headers.lower_items()), refused.content, 413
    )
    assert problem["max_bytes"] == 1000
    assert _submissions() == before + 1
