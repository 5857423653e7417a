"""Operations endpoints: liveness, readiness (database, broker, Triton), metrics, OpenAPI and its
HTML page."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from webhook_api.openapi import document
from webhook_api.state import AppState, state

logger = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

BROKER_TIMEOUT_S = 3.0


def _check_database(st: AppState) -> dict[str, Any]:
    from alembic.runtime.migration import MigrationContext

    with st.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None:
        return {
            "ok": False,
            "detail": "the schema is not migrated; expected 'dfmod migrate' to run",
        }
    return {"ok": True, "revision": revision}


def _check_broker(st: AppState) -> dict[str, Any]:
    with st.celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
        return {"ok": True, "transport": connection.transport_cls}


def _check_triton(st: AppState) -> dict[str, Any]:
    from serving.client import TritonClient

    client = TritonClient.from_settings(st.settings)
    try:
        ready = client.is_ready()
    finally:
        client.close()
    detail = (
        "live and model loaded" if ready else "not ready; expected a live server with the model"
    )
    return {"ok": bool(ready), "url": st.settings.triton_grpc_url, "detail": detail}


def _run(name: str, check: Any, expected: str, st: AppState) -> dict[str, Any]:
    """Returns ``check``'s report, or what it expected when it raised: the exception's text
    names hosts, ports and database names, so it goes to the log, not to whoever asks."""
    try:
        return check(st)
    except Exception as exc:
        logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
        return {"ok": False, "detail": f"cannot be reached; {expected} (the cause is in the log)"}


# Each readiness check and what it expects when it cannot reach its service.
_CHECKS = {
    "database": (
        _check_database,
        "expected the database of DFMOD_DATABASE_URL to accept connections",
    ),
    "broker": (_check_broker, "expected the broker of DFMOD_BROKER_URL to accept connections"),
    "triton": (_check_triton, "expected Triton at DFMOD_TRITON_HOST and its gRPC port"),
}


@bp.get("/healthz")
def healthz() -> Response:
    """Returns 200 while the process serves requests (liveness)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Returns 200 when database, broker and Triton are all usable, else 503; each is reported."""
    st = state()
    checks = {name: _run(name, check, expected, st) for name, (check, expected) in _CHECKS.items()}
    ready = all(c["ok"] for c in checks.values())
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Returns Prometheus metrics in the text exposition format."""
    return current_app.extensions["dfmod_metrics"].render()


@bp.get("/openapi.json")
def openapi() -> Response:
    """Returns the OpenAPI 3.1 document of this API."""
    return jsonify(document())


@bp.get("/docs")
def docs() -> Response:
    """Returns the OpenAPI document as an HTML page (no external assets)."""
    from webhook_api.docs_page import render

    return Response(render(), mimetype="text/html")
