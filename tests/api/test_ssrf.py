"""The SSRF guard: every private, loopback, link-local and disguised address is refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moderation.ssrf import OutboundBlocked, check_url, parse_allowlist, safe_session
from tests.fixtures.integration import unavailable

BLOCKED = [
    "http://127.0.0.1/",
    "http://127.8.9.10:8080/x",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[2002:7f00:1::1]/",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 around 10.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo
    "http://[fc00::1]/",
    "http://0.0.0.0/",
    "http://100.64.0.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://localhost/",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_check_url__fail_on_non_public_addresses(url: str) -> None:
    with pytest.raises(OutboundBlocked, match="not a public address"):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/file", "expected http or https"),
        ("file:///etc/passwd", "expected http or https"),
        ("http:///path-only", "has no host"),
        ("https://user:secret@example.com/", "credentials"),
        ("http://[::1/", "not a valid URL"),
        ("http://does-not-exist.invalid/", "does not resolve"),
    ],
)
def test_check_url__fail_on_malformed_urls(url: str, message: str) -> None:
    with pytest.raises(OutboundBlocked, match=message):
        check_url(url)


def test_public_literal_addresses_pass() -> None:
    assert check_url("https://8.8.8.8/x") == ["8.8.8.8"]
    assert check_url("http://[2606:4700:4700::1111]:8080/") == ["2606:4700:4700::1111"]


def test_allowlist_exempts_only_the_named_networks() -> None:
    allow = "127.0.0.0/8, ::1/128"
    assert check_url("http://127.0.0.1:9/", allowlist=allow) == ["127.0.0.1"]
    assert check_url("http://2130706433/", allowlist=allow) == ["127.0.0.1"]
    assert check_url("http://[::1]/", allowlist=allow) == ["::1"]
    with pytest.raises(OutboundBlocked):
        check_url("http://10.0.0.1/", allowlist=allow)


def test_parse_allowlist__fail_on_garbage() -> None:
    with pytest.raises(ValueError, match="expected a CIDR"):
        parse_allowlist("127.0.0.0/8,not-a-network")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect-private":
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/secret")
            self.end_headers()
            return
        body = self.headers.get("Host", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def local_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_safe_session_refuses_loopback_without_allowlist(local_server: int) -> None:
    with pytest.raises(OutboundBlocked):
        safe_session().get(f"http://127.0.0.1:{local_server}/", timeout=5)


def test_safe_session_connects_to_the_checked_address_keeping_the_host_header(
    local_server: int,
) -> None:
    response = safe_session(allowlist="127.0.0.0/8").get(
        f"http://localhost:{local_server}/", timeout=5
    )
    assert response.status_code == 200
    assert response.text == f"localhost:{local_server}"


def test_safe_session_checks_every_redirect(local_server: int) -> None:
    session = safe_session(allowlist="127.0.0.0/8")
    with pytest.raises(OutboundBlocked, match=r"10\.0\.0\.1"):
        session.get(f"http://127.0.0.1:{local_server}/redirect-private", timeout=5)


@pytest.fixture()
def tls_server(tmp_path) -> Iterator[tuple[int, str]]:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        unavailable("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
    command += ["-addext", "subjectAltName=DNS:localhost"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], str(cert)
    server.shutdown()
    server.server_close()


def test_safe_session_pins_https_keeping_sni_and_certificate_checks(
    tls_server: tuple[int, str],
) -> None:
    import requests

    port, cert = tls_server
    session = safe_session(allowlist="127.0.0.0/8")
    response = session.get(f"https://localhost:{port}/", verify=cert, timeout=5)
    assert response.status_code == 200 and response.text == f"localhost:{port}"
    # The certificate names localhost, not 127.0.0.1: verification is still on.
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"https://127.0.0.1:{port}/", verify=cert, timeout=5)
