"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the API's models.

Schemas come from :mod:`moderation.api_schema`; this module says which operation takes and
answers which model, with which statuses. Routes under :data:`UNDOCUMENTED_PREFIXES` are left out.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from moderation import api_schema as s

logger = logging.getLogger(__name__)

UNDOCUMENTED_PREFIXES = ("/static", "/review", "/dashboard")
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
REF = "#/components/schemas/{model}"

# Statuses any request may get from the HTTP server or the framework, whatever the operation.
SERVER_STATUSES = {
    400: "The request is not well-formed HTTP (the HTTP server or the framework refused it)",
    405: "The path does not take this method; `Allow` lists those it takes",
    413: "The body is larger than the API reads (DFMOD_MAX_UPLOAD_BYTES plus room for fields)",
    414: f"The request line is longer than {s.MAX_REQUEST_LINE_BYTES} bytes",
    431: (
        f"More than {s.MAX_HEADER_FIELDS} header fields, or one longer than "
        f"{s.MAX_HEADER_FIELD_BYTES} bytes"
    ),
    417: "An Expect header other than 100-continue (the HTTP server)",
    500: "An internal error; it was logged and nothing internal is in the body",
    501: "A Transfer-Encoding other than chunked (the HTTP server)",
    503: "The database cannot be reached for the moment; nothing was stored, retry after "
    "`Retry-After` seconds",
}
STATUS_TEXT = {
    400: "Bad request (malformed JSON, or malformed HTTP)",
    401: "Missing or invalid API key",
    404: "Not found",
    409: "Idempotency-Key reused with a different request",
    415: "Content-Type not accepted; the detail lists the accepted ones",
    422: "Invalid fields; `errors` names each one and what was expected",
    429: "Over the tenant's submissions per minute; see `Retry-After`",
    503: "Not ready",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    405: {"Allow": {"schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}},
    503: {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}},
}
_FIELD_IN_QUERY = (
    "As a query parameter it goes with any body shape; where the body gives it too, the body's "
    "value is used."
)


def _schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(m, "serialization") for m in s.RESPONSE_MODELS]
    models += [(m, "validation") for m in s.REQUEST_MODELS]
    _, top = models_json_schema(models, ref_template=REF)
    return dict(top["$defs"])


def _problem(status: int, description: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _json(model: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }


def _responses(ok: dict[str, dict[str, Any]], *errors: int) -> dict[str, Any]:
    statuses = {code: STATUS_TEXT[code] for code in errors}
    statuses.update({c: d for c, d in SERVER_STATUSES.items() if c not in statuses})
    out = dict(ok)  # an operation's own answer for a status (readyz's 503) comes first
    out.update(
        {
            str(code): _problem(code, statuses[code])
            for code in sorted(statuses)
            if str(code) not in ok
        }
    )
    return out


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Returns a field's schema without its ``null`` alternative and title."""
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    out = {k: v for k, v in options[0].items() if k != "title"}
    if "description" in schema:
        out["description"] = schema["description"]
    return out


def _query(
    model: type[BaseModel], names: tuple[str, ...], note: str = "", *, text: bool = False
) -> list[dict]:
    """Returns query parameters for ``names`` of ``model`` (``text``: empty means absent)."""
    properties = model.model_json_schema(ref_template=REF)["properties"]
    parameters = []
    for name in names:
        schema = _non_null(properties[name])
        said = schema.pop("description", "").rstrip(".")
        description = " ".join(p for p in (f"{said}." if said else "", note) if p)
        parameter: dict[str, Any] = {"name": name, "in": "query", "description": description}
        if schema.get("type") == "object":  # JSON text, e.g. metadata
            parameter["content"] = {"application/json": {"schema": schema}}
        else:
            if text and "pattern" in schema:  # empty text means not given
                schema = {**schema, "pattern": "^$|" + schema["pattern"]}
                schema.pop("minLength", None)
            parameter["schema"] = schema
        parameters.append(parameter)
    return parameters


def _upload_body() -> dict[str, Any]:
    # A Media Type Object has no description of its own: it goes on the schema.
    raw = {
        "schema": {
            "type": "string",
            "format": "binary",
            "minLength": 1,
            "description": "The media's bytes. Any bytes are accepted (202): the worker decides "
            "from the bytes, not the Content-Type, and a non-image ends `failed` with "
            "`unsupported_media` (a corrupt one with `unreadable_media`).",
        },
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"$ref": REF.format(model="UploadForm")},
                "encoding": {"metadata": {"contentType": "application/json"}},
            },
            "application/json": {"schema": {"$ref": REF.format(model="MediaUrlRequest")}},
            **{media_type: dict(raw) for media_type in s.RAW_TYPES},
        },
    }


def _create_submission() -> dict[str, Any]:
    return {
        "operationId": "createSubmission",
        "summary": "Submit media for moderation",
        "description": (
            "Stores the upload or URL and enqueues scoring; nothing is decoded here. Three "
            "shapes: multipart/form-data with a `file` part; application/json with a "
            "`media_url`; or the media itself as the body (" + ", ".join(s.RAW_TYPES) + "). "
            "`callback_url`, `external_id` and `metadata` go in the body or as query parameters "
            "(the body's value where both give one). "
            "Uploads over DFMOD_MAX_UPLOAD_BYTES are 413 in every shape. The Idempotency-Key "
            "fingerprint covers the media's SHA-256 (or URL) and the fields, not the shape: the "
            "same bytes and fields sent raw or as multipart are the same request."
        ),
        "security": BEARER,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "description": "Same key and same request: the first answer again; same key and "
                "another request: 409",
                "schema": {"type": "string", "pattern": s.IDEMPOTENCY_KEY_PATTERN},
            },
            *_query(s.SubmissionFields, s.OPTIONAL_FIELDS, _FIELD_IN_QUERY, text=True),
        ],
        "requestBody": _upload_body(),
        "responses": _responses(
            {
                "202": {
                    **_json("SubmissionOut", "Accepted; poll the Location"),
                    "headers": {
                        "Location": {"schema": {"type": "string"}, "required": True},
                        "Idempotent-Replayed": {
                            "schema": {"type": "string", "enum": ["true"]},
                            "description": "Present when this is the stored first answer",
                        },
                    },
                    "links": {
                        "GetSubmission": {
                            "operationId": "getSubmission",
                            "parameters": {"submission_id": "$response.body#/id"},
                        }
                    },
                }
            },
            400,
            401,
            409,
            415,
            422,
            429,
        ),
    }


def _list_submissions() -> dict[str, Any]:
    return {
        "operationId": "listSubmissions",
        "summary": "List submissions, newest first",
        "security": BEARER,
        "parameters": _query(s.ListQuery, tuple(s.ListQuery.model_fields)),
        "responses": _responses({"200": _json("SubmissionList", "One page")}, 401, 422),
    }


def _get_submission() -> dict[str, Any]:
    return {
        "operationId": "getSubmission",
        "summary": "Get one submission with its verdict",
        "security": BEARER,
        "parameters": [
            {
                "name": "submission_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
            }
        ],
        "responses": _responses(
            {"200": _json("SubmissionOut", "The submission")},
            401,
            404,
        ),
    }


def _plain(operation_id: str, summary: str, media_type: str, schema: dict) -> dict[str, Any]:
    ok = {"description": summary, "content": {media_type: {"schema": schema}}}
    return {"operationId": operation_id, "summary": summary, "responses": _responses({"200": ok})}


def _ops_paths() -> dict[str, Any]:
    ready = _json("Readiness", "Database, broker and Triton all ready")
    readyz = {
        "operationId": "readyz",
        "summary": "Readiness of database, broker and Triton, each reported",
        "responses": _responses(
            {"200": ready, "503": _json("Readiness", "At least one check failed")}
        ),
    }
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": _responses({"200": _json("Health", "Alive")}),
            }
        },
        "/readyz": {"get": readyz},
        "/metrics": {
            "get": _plain("metrics", "Prometheus metrics", "text/plain", {"type": "string"})
        },
        "/openapi.json": {
            "get": _plain("openapi", "This document", "application/json", {"type": "object"})
        },
        "/docs": {
            "get": _plain("docs", "This document as an HTML page", "text/html", {"type": "string"})
        },
    }


_WEBHOOK_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "The event's id, the same on every attempt to deliver it: deduplicate on it",
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "description": "Unix seconds when this attempt was signed; refuse one more than 5 minutes "
        "from now",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "Space-separated `v1,<base64>` entries, each an HMAC-SHA256 over "
        "`{webhook-id}.{webhook-timestamp}.{body}` with a `whsec_` secret of the tenant (two "
        "while a rotated secret is still valid); accept the request if one matches",
    },
]


def _webhooks() -> dict[str, Any]:
    """Returns the callbacks dfmod sends (OpenAPI 3.1 ``webhooks``): one per event type."""
    return {
        event: {
            "post": {
                "operationId": "webhook_" + event.replace(".", "_"),
                "summary": summary,
                "description": "Sent to the submission's `callback_url` as a Standard Webhooks "
                "POST (https://www.standardwebhooks.com/). Answer 2xx within "
                "DFMOD_CALLBACK_TIMEOUT_S; any other answer, or none, is retried on "
                "DFMOD_CALLBACK_SCHEDULE with the same `webhook-id`.",
                "parameters": _WEBHOOK_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="WebhookEvent")}}
                    },
                },
                "responses": {
                    "2XX": {"description": "Received; no body is read"},
                    "default": {"description": "Not received: the event is sent again later"},
                },
            }
        }
        for event, summary in s.EVENTS.items()
    }


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dfmod moderation API",
            "version": "1",
            "description": "Deepfake moderation: submit media, poll or receive signed callbacks. "
            "Every error is an RFC 9457 `application/problem+json` document.",
        },
        "paths": {
            "/v1/submissions": {"post": _create_submission(), "get": _list_submissions()},
            "/v1/submissions/{submission_id}": {"get": _get_submission()},
            **_ops_paths(),
        },
        "webhooks": _webhooks(),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


def document() -> dict[str, Any]:
    """Returns a copy of the OpenAPI document."""
    return copy.deepcopy(_document())
