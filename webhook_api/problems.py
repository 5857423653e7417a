"""RFC 9457 problem details: every error the API returns, with a stable ``type`` URI.

Handlers raise :class:`ApiProblem`; Werkzeug's HTTP errors (404, 405, 413 ...) and unexpected
exceptions are turned into the same shape, and a 500 never carries internals (they are logged).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from moderation.db import DATABASE_UNAVAILABLE

logger = logging.getLogger(__name__)

PROBLEM_BASE = "https://dfmod.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

# HTTP status -> (slug, title, what was expected) for errors raised by Flask/Werkzeug itself.
_HTTP_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("bad-request", "Bad request", "expected a well-formed HTTP request"),
    401: ("unauthorized", "Unauthorized", "expected 'Authorization: Bearer <API key>'"),
    404: ("not-found", "Not found", "expected a path listed in /openapi.json"),
    405: ("method-not-allowed", "Method not allowed", "expected a method listed in /openapi.json"),
    413: ("payload-too-large", "Payload too large", "expected a smaller request body"),
    415: ("unsupported-media-type", "Unsupported media type", "expected a documented type"),
    500: ("internal-error", "Internal server error", "the error was logged; try again later"),
}

# Seconds a client is told to wait (Retry-After) when the database cannot be reached: long enough
# for a restart or a failover to finish, short enough that no upload waits much longer than it.
DATABASE_RETRY_AFTER_S = 5


class ApiProblem(Exception):
    """An error answer: ``slug`` names the problem type, ``detail`` says what was expected."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(f"{status} {slug}: {detail}")
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.extensions = extensions

    def response(self, instance: str | None = None) -> Response:
        """Returns the problem+json response."""
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        response = jsonify(body)
        response.status_code = self.status
        response.content_type = PROBLEM_CONTENT_TYPE
        response.headers.update(self.headers)
        return response


def validation_problem(errors: list[dict[str, str]]) -> ApiProblem:
    """Returns a 422 listing each invalid field and what it expected."""
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return ApiProblem(422, "validation-error", "Invalid request", summary, errors=errors)


def _from_http(exc: HTTPException) -> ApiProblem:
    status = exc.code or 500
    slug, title, expected = _HTTP_PROBLEMS.get(
        status, ("http-error", exc.name or "HTTP error", "see the API documentation")
    )
    detail = expected
    headers = {}
    valid_methods = getattr(exc, "valid_methods", None)
    if status == 405 and valid_methods:
        detail = f"expected one of {', '.join(sorted(valid_methods))}"
        headers["Allow"] = ", ".join(sorted(valid_methods))
    return ApiProblem(status, slug, title, detail, headers=headers)


def register_error_handlers(app: Flask) -> None:
    """Makes every error of ``app`` a problem+json response."""
    from flask import request

    @app.errorhandler(ApiProblem)
    def _api_problem(exc: ApiProblem) -> Response:
        return exc.response(request.path)

    @app.errorhandler(HTTPException)
    def _http_problem(exc: HTTPException) -> Response:
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            return ApiProblem(
                413,
                "payload-too-large",
                "Payload too large",
                f"the request body exceeds {limit} bytes; expected a smaller upload",
                max_bytes=limit,
            ).response(request.path)
        return _from_http(exc).response(request.path)

    def _database_unavailable(exc: Exception) -> Response:
        # Nothing was stored, and the same request can succeed in a moment.
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__
        )
        return database_unavailable().response(request.path)

    for error in DATABASE_UNAVAILABLE:
        app.register_error_handler(error, _database_unavailable)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _from_http_status(500).response(request.path)


def database_unavailable() -> ApiProblem:
    """Returns the 503 for a database that cannot be reached (``Retry-After`` set)."""
    return ApiProblem(
        503,
        "service-unavailable",
        "Service unavailable",
        "the database cannot be reached for the moment and nothing was stored; expected to "
        f"succeed when retried after {DATABASE_RETRY_AFTER_S} seconds",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def _from_http_status(status: int) -> ApiProblem:
    slug, title, expected = _HTTP_PROBLEMS[status]
    return ApiProblem(status, slug, title, expected)
