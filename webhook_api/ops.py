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


# What a failed check expected; the cause (an exception's text, which names hosts, ports and
# database names) goes to the log, not to whoever asks /readyz.
_UNREACHABLE = {
    "_check_database": "cannot be reached; expected the database of DFMOD_DATABASE_URL to accept "
    "connections",
    "_check_broker": "cannot be reached; expected the broker of DFMOD_BROKER_URL to accept "
    "connections",
    "_check_triton": "cannot be reached; expected Triton at DFMOD_TRITON_HOST and its gRPC port",
}


def _run(check: Any, st: AppState) -> dict[str, Any]:
    try:
        return check(st)
    except Exception as exc:
        logger.warning("readiness check %s failed: %s: %s", check.__name__, type(exc).__name__, exc)
        expected = _UNREACHABLE.get(check.__name__, "failed")
        return {"ok": False, "detail": f"{expected} (the cause is in the API's log)"}


@bp.get("/healthz")
def healthz() -> Response:
    """Returns 200 while the process serves requests (liveness)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Returns 200 when database, broker and Triton are all usable, else 503; each is reported."""
    st = state()
    checks = {
        "database": _run(_check_database, st),
        "broker": _run(_check_broker, st),
        "triton": _run(_check_triton, st),
    }
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
