"""SSRF through the product's real paths: the API's URL fields and the worker's media fetch.

``tests/api/test_ssrf.py`` covers the guard itself; here every disguise of a private address is
sent as ``media_url`` and ``callback_url`` (JSON and multipart) and must be refused with 422 unless
allow-listed, and a worker fetching from an allow-listed redirector must refuse the redirect to an
address outside the allow-list (the target server sees no request, the submission fails).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from flask import Flask

from tests.fixtures.stack import Stack, embedded_stack, triton_env
from tests.reliability.input_corpus import valid_bases
from tests.reliability.sqlite_app import bearer, make_app

PRIVATE_URLS = [
    "http://127.0.0.1/a.png",
    "http://127.0.0.2:8080/a.png",
    "http://[::1]/a.png",
    "http://10.0.0.1/a.png",
    "http://10.200.3.4/a.png",
    "http://172.16.0.1/a.png",
    "http://172.31.255.254/a.png",
    "http://192.168.1.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[::ffff:a9fe:a9fe]/latest",  # IPv4-mapped 169.254.169.254 in hex groups
    "http://[::ffff:10.0.0.1]/a.png",
    "http://2130706433/a.png",  # decimal 127.0.0.1
    "http://3232235777/a.png",  # decimal 192.168.1.1
    "http://0177.0.0.1/a.png",  # octal
    "http://0x7f.0x0.0x0.0x1/a.png",  # hex per part
    "http://0x7f000001/a.png",  # hex whole
    "http://0xa9fea9fe/latest",  # hex 169.254.169.254
    "http://127.1/a.png",
    "http://localhost/a.png",
    "http://localhost.:8080/a.png",
    "http://0.0.0.0/a.png",
]


@pytest.fixture(scope="module")
def strict_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    app, url = make_app(tmp_path_factory.mktemp("ssrf-strict"))
    yield app, url
    app.extensions["dfmod"].engine.dispose()


@pytest.mark.parametrize("target", PRIVATE_URLS)
def test_api_refuses_private_targets_in_every_field(
    strict_app: tuple[Flask, str], target: str
) -> None:
    app, url = strict_app
    client, (_, headers) = app.test_client(), bearer(url)
    public = "http://93.184.216.34/x.png"  # a global literal: no DNS is needed
    attempts = [
        ("media_url", {"media_url": target}),
        ("callback_url", {"media_url": public, "callback_url": target}),
    ]
    for field, body in attempts:
        response = client.post("/v1/submissions", json=body, headers=headers)
        assert response.status_code == 422, (field, target, response.get_json())
        fields = [e["field"] for e in response.get_json()["errors"]]
        assert fields == [field], (target, response.get_json())
    form = {
        "file": (io.BytesIO(valid_bases()["png_rgb"]), "a.png"),
        "callback_url": target,
    }
    response = client.post("/v1/submissions", data=form, headers=headers)
    assert response.status_code == 422 and "callback_url" in response.get_data(as_text=True)


def test_allowlist_exempts_exactly_its_networks(tmp_path: Path) -> None:
    app, url = make_app(tmp_path, outbound_allowlist="127.0.0.1/32")
    client, (_, headers) = app.test_client(), bearer(url)
    try:
        allowed = client.post(
            "/v1/submissions", json={"media_url": "http://127.0.0.1:9/a.png"}, headers=headers
        )
        assert allowed.status_code == 202, allowed.get_json()
        for neighbour in ("http://127.0.0.2/a.png", "http://[::1]/a.png", "http://10.0.0.1/"):
            refused = client.post("/v1/submissions", json={"media_url": neighbour}, headers=headers)
            assert refused.status_code == 422, neighbour
    finally:
        app.extensions["dfmod"].engine.dispose()


class _Servers:
    """A redirector on 127.0.0.1 and an image target on 127.0.0.2 that counts its requests."""

    def __init__(self, image: bytes) -> None:
        self.hits: list[str] = []
        servers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if "?to=" in self.path:
                    self.send_response(302)
                    self.send_header("Location", unquote(self.path.split("?to=", 1)[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.server is servers.target:
                    servers.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(image)))
                self.end_headers()
                self.wfile.write(image)

            def log_message(self, *args: object) -> None:
                pass

        self.redirector = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        for server in (self.redirector, self.target):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def redirect(self, to: str) -> str:
        return f"http://127.0.0.1:{self.redirector.server_address[1]}/r?to={to}"

    def stop(self) -> None:
        for server in (self.redirector, self.target):
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def servers() -> Iterator[_Servers]:
    started = _Servers(valid_bases()["png_rgb"])
    yield started
    started.stop()


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**triton_env(triton_server), "DFMOD_OUTBOUND_ALLOWLIST": "127.0.0.1/32"}
    started = embedded_stack(tmp_path_factory.mktemp("ssrf-stack"), env)
    with started:
        yield started


@pytest.mark.integration
def test_worker_refuses_redirects_outside_the_allowlist(stack: Stack, servers: _Servers) -> None:
    key = stack.tenant().api_key
    target_port = servers.target.server_address[1]
    hidden = [
        f"http://127.0.0.2:{target_port}/img.png",
        f"http://[::1]:{target_port}/img.png",
        "http://169.254.169.254/latest/meta-data/",
        f"http://2130706434:{target_port}/img.png",  # 127.0.0.2 in decimal
        f"http://0x7f.0.0.2:{target_port}/img.png",  # 127.0.0.2 in hex
    ]
    # Names: here "localhost" resolves only to the allow-listed 127.0.0.1, so it is (rightly)
    # allowed; the strict API test above shows a name resolving to loopback refused.
    ids = []
    for to in hidden:
        response = stack.submit_url(key, servers.redirect(to))
        assert response.status_code == 202, response.text  # the redirector itself is allowed
        ids.append(response.json()["id"])
    for submission_id, to in zip(ids, hidden, strict=True):
        body = stack.wait_final(key, submission_id, timeout_s=60)
        assert body["status"] == "failed", (to, body)
        assert body["failure"]["reason"] == "fetch_failed", (to, body)
        assert "public" in body["failure"]["detail"], (to, body)
    assert servers.hits == [], "the private target was contacted"
    # Control: the same redirector leading to an allow-listed address is followed and scored.
    own = f"http://127.0.0.1:{servers.redirector.server_address[1]}/img.png"
    control = stack.submit_url(key, servers.redirect(own))
    assert control.status_code == 202, control.text
    body = stack.wait_final(key, control.json()["id"], timeout_s=60)
    assert body["status"] != "failed", body
