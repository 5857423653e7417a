"""The worker's reused outbound session: connections kept, nothing else carried over.

A real server on 127.0.0.1 sets a cookie on every answer; the next request (same thread, same
allow-list, so the same session) must not carry it back, and the guard still refuses a request
under an allow-list that does not name loopback. A keep-alive server sees the next request on
the same connection while the host answers the same address, and on a new one when it does not.
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


class _KeepAliveServer(ThreadingHTTPServer):
    daemon_threads = True
    ports_seen: list[int]
    answer: bytes


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _KeepAliveServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.ports_seen.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _keep_alive_server(host: str, port: int = 0) -> _KeepAliveServer:
    httpd = _KeepAliveServer((host, port), _KeepAliveHandler)
    httpd.ports_seen, httpd.answer = [], b'{"ok": true}'
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _servers_on_one_port(host: str, other: str) -> tuple[_KeepAliveServer, _KeepAliveServer]:
    """Returns keep-alive servers on two loopback addresses with the same free port."""
    for _ in range(20):
        first = _keep_alive_server(host)
        try:
            return first, _keep_alive_server(other, first.server_address[1])
        except OSError:  # that port is taken on the other address: try another
            first.shutdown()
            first.server_close()
    raise AssertionError(f"no port free on both {host} and {other} in 20 tries")


def _post_released(url: str, settings: Settings) -> int:
    with outbound.request("POST", url, settings=settings, timeout_s=2.0, data=b"{}") as response:
        outbound.release(response)
        return response.status_code


def test_request__keeps_the_connection_for_the_next_request(tmp_path: Path) -> None:
    httpd = _keep_alive_server("127.0.0.1")
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        settings = _settings(tmp_path, "127.0.0.0/8")
        assert [_post_released(url, settings) for _ in range(3)] == [200, 200, 200]
        assert len(set(httpd.ports_seen)) == 1, f"expected one connection: {httpd.ports_seen}"
        httpd.answer = b"x" * (4 * outbound.KEEP_AFTER_BYTES)  # too long to read: not kept
        assert [_post_released(url, settings) for _ in range(3)] == [200, 200, 200]
        ports = httpd.ports_seen
        # The first long answer came on the kept connection; each one closes its connection.
        assert ports[3] == ports[0] and len({ports[3], ports[4], ports[5]}) == 3, ports
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_request__a_host_that_answers_another_address_gets_a_new_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moderation.ssrf as ssrf

    first, second = _servers_on_one_port("127.0.0.1", "127.0.0.2")
    port = first.server_address[1]
    answers = iter(["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.1"])

    def resolved(url: str, **_kwargs: object) -> list[str]:
        return [next(answers)]  # what a name that moved between two checks would resolve to

    monkeypatch.setattr(ssrf, "check_url", resolved)
    try:
        url = f"http://callbacks.example:{port}/hook"
        settings = _settings(tmp_path, "127.0.0.0/8")
        assert [_post_released(url, settings) for _ in range(4)] == [200] * 4
        assert len(first.ports_seen) == 3 and len(second.ports_seen) == 1
        assert first.ports_seen[0] == first.ports_seen[1] != first.ports_seen[2]
    finally:
        for httpd in (first, second):
            httpd.shutdown()
            httpd.server_close()
