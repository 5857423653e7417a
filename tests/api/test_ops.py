"""Operations endpoints: health, readiness per dependency, metrics, and OpenAPI true to routes."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.fixtures.flask_app import upload
from tests.fixtures.media import flat_image
from webhook_api.openapi import UNDOCUMENTED_PREFIXES, document


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_reports_each_dependency(client: FlaskClient) -> None:
    response = client.get("/readyz")
    body = response.get_json()
    assert set(body["checks"]) == {"database", "broker", "triton"}
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["revision"]
    assert body["checks"]["broker"]["ok"] is True
    # Nothing listens on the configured Triton port, so the service is not ready.
    assert body["checks"]["triton"]["ok"] is False
    assert response.status_code == 503 and body["status"] == "unavailable"


def test_readyz_reports_an_unmigrated_database(settings, tmp_path) -> None:
    from webhook_api import create_app

    app = create_app(
        settings.replace(database_url=f"sqlite:///{tmp_path / 'empty.db'}"), {"TESTING": True}
    )
    checks = app.test_client().get("/readyz").get_json()["checks"]
    assert checks["database"]["ok"] is False and "dfmod migrate" in checks["database"]["detail"]
    app.extensions["dfmod"].engine.dispose()


def test_metrics_count_requests_by_route_and_submissions_by_status(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    client.post("/v1/submissions", data=upload(flat_image()), headers=auth)
    client.get("/v1/submissions/sub_missing", headers=auth)
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'dfmod_http_requests_total{method="POST",route="/v1/submissions",status="202"} 1.0' in text
    )
    assert (
        'dfmod_http_requests_total{method="GET",route="/v1/submissions/<submission_id>",'
        'status="404"} 1.0' in text
    )
    assert 'dfmod_submissions{status="queued"} 1.0' in text
    assert 'dfmod_submissions{status="failed"} 0.0' in text
    assert "dfmod_http_request_duration_seconds_bucket" in text


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def _routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith(UNDOCUMENTED_PREFIXES):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, m) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"}}
    return routes


def test_openapi_document_matches_the_routes(client: FlaskClient, app: Flask) -> None:
    served = client.get("/openapi.json").get_json()
    assert served == document()
    assert served["openapi"].startswith("3.")
    assert _documented(served) == _routes(app)


def test_openapi_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    """Checked against the OpenAPI 3.1 specification's own schema (openapi-spec-validator), as
    client generators and gateways read it; every error is listed, not only the first."""
    served = client.get("/openapi.json").get_json()
    assert served["openapi"] == "3.1.0"
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message.splitlines()[0]}"
        for error in OpenAPIV31SpecValidator(served).iter_errors()
    ]
    assert errors == []


def test_openapi_refs_resolve(client: FlaskClient) -> None:
    served = client.get("/openapi.json").get_json()
    refs = re.findall(r'"\$ref": "#/([^"]+)"', str(served).replace("'", '"'))
    assert refs
    for ref in refs:
        node = served
        for part in ref.split("/"):
            node = node[part]
