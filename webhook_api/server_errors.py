"""Errors the HTTP server answers itself, as ``application/problem+json`` like every other one.

:func:`install` replaces ``gunicorn.util.write_error`` (its 400, 414 and 431 answers) with one
writing an RFC 9457 problem with the same status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from webhook_api.problems import PROBLEM_BASE, PROBLEM_CONTENT_TYPE

logger = logging.getLogger(__name__)

_SLUGS = {
    400: ("bad-request", "expected a well-formed HTTP/1.1 request"),
    403: ("forbidden", "expected a request the server accepts"),
    414: ("uri-too-long", "expected a shorter request line (path and query)"),
    417: ("expectation-failed", "expected no Expect header, or 'Expect: 100-continue'"),
    431: ("request-header-fields-too-large", "expected fewer or shorter header fields"),
    500: ("internal-error", "the error was logged; try again later"),
    501: ("not-implemented", "expected a supported Transfer-Encoding (chunked)"),
}


def problem_bytes(status: int, reason: str, message: str) -> bytes:
    """Returns a whole HTTP/1.1 response carrying the problem for one of gunicorn's refusals."""
    slug, expected = _SLUGS.get(status, ("http-error", "see the API documentation at /docs"))
    detail = f"{message}; {expected}" if message else expected
    body = json.dumps(
        {"type": PROBLEM_BASE + slug, "title": reason, "status": status, "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    from gunicorn import util

    util.write_nonblock(sock, problem_bytes(int(status_int), reason, mesg))


def install() -> None:
    """Makes gunicorn (in this process and the workers it forks) answer its own refusals as
    problem+json."""
    from gunicorn import util

    util.write_error = _write_problem
