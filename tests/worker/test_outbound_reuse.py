"""The worker's reused outbound session behaves like a new one on every request.

A real server on 127.0.0.1 sets a cookie on every answer; the next request (same thread, same
allow-list, so the same session) must not carry it back, and the guard still refuses a request
under an allow-list that does not name loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from moderation.settings import Settings, load_settings
from worker import outbound


class _CookieServer(ThreadingHTTPServer):
    cookies_seen: list[str | None]


class _Handler(BaseHTTPRequestHandler):
    server: _CookieServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.cookies_seen.append(self.headers.get("Cookie"))
        self.send_response(200)
        self.send_header("Set-Cookie", "tracker=1; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture()
def server() -> Iterator[_CookieServer]:
    httpd = _CookieServer(("127.0.0.1", 0), _Handler)
    httpd.cookies_seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _settings(tmp_path: Path, allowlist: str) -> Settings:
    return load_settings(environ={}, data_dir=tmp_path, outbound_allowlist=allowlist)


def _post(url: str, settings: Settings) -> int:
    with outbound.request("POST", url, settings=settings, timeout_s=2.0, data=b"{}") as response:
        return response.status_code


def test_request__reused_session_sends_no_cookie_back(
    server: _CookieServer, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    settings = _settings(tmp_path, "127.0.0.0/8")
    assert [_post(url, settings) for _ in range(3)] == [200, 200, 200]
    assert server.cookies_seen == [None, None, None], (
        f"expected no Cookie header on any request, got {server.cookies_seen}"
    )


def test_request__guard_checks_after_reuse(server: _CookieServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    assert _post(url, _settings(tmp_path, "127.0.0.0/8")) == 200
    with pytest.raises(outbound.OutboundError) as refused:
        _post(url, _settings(tmp_path, ""))
    assert refused.value.blocked, f"expected an SSRF refusal, got {refused.value}"
    assert _post(url, _settings(tmp_path, "127.0.0.0/8")) == 200
    assert len(server.cookies_seen) == 2
