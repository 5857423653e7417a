"""The OpenAPI 3.1 document served at ``/openapi.json``.

Kept as data beside the routes; ``tests/api/test_openapi.py`` asserts that its paths and methods
equal the application's URL map, so the document cannot drift from the code. Routes under
:data:`UNDOCUMENTED_PREFIXES` (HTML dashboard, static files) are not part of the JSON API.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from moderation.models import Status
from moderation.submissions import MAX_PAGE_SIZE
from webhook_api.intake import RAW_TYPES

logger = logging.getLogger(__name__)

UNDOCUMENTED_PREFIXES = ("/static", "/review", "/dashboard")
PROBLEM = {"$ref": "#/components/responses/Problem"}
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _problems(*codes: int) -> dict[str, Any]:
    return {str(code): PROBLEM for code in codes}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


_OPTIONAL_PROPS = {
    "callback_url": {"type": "string", "format": "uri", "maxLength": 2048},
    "external_id": {"type": "string", "maxLength": 200},
    "metadata": {"type": "object", "description": "Any JSON object up to 16 KiB, echoed back"},
}

_RAW_BODY = {"schema": {"type": "string", "format": "binary"}}
_RAW_ONLY = "Raw media bodies only (multipart and JSON bodies carry it in the body; 422 here)"
_RAW_QUERY = [
    {
        "name": "callback_url",
        "in": "query",
        "description": _RAW_ONLY,
        "schema": _OPTIONAL_PROPS["callback_url"],
    },
    {
        "name": "external_id",
        "in": "query",
        "description": _RAW_ONLY,
        "schema": _OPTIONAL_PROPS["external_id"],
    },
    {
        "name": "metadata",
        "in": "query",
        "description": f"{_RAW_ONLY}: a JSON object as text, up to 16 KiB",
        "schema": {"type": "string"},
    },
]

_SCHEMAS: dict[str, Any] = {
    "Submission": {
        "type": "object",
        "required": ["id", "status", "media", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string", "example": "sub_3f2c0c1e9d5b4b8e9a7d6c5b4a392817"},
            "status": {"type": "string", "enum": list(Status.ALL)},
            "media": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["upload", "url"]},
                    "url": {"type": ["string", "null"]},
                    "sha256": {"type": ["string", "null"]},
                    "size_bytes": {"type": ["integer", "null"]},
                },
            },
            "callback_url": {"type": ["string", "null"]},
            "external_id": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "verdict": {"oneOf": [{"$ref": "#/components/schemas/Verdict"}, {"type": "null"}]},
            "review": {
                "type": ["object", "null"],
                "description": "The latest human review decision, once there is one",
                "properties": {
                    "label": {"type": "string", "enum": ["real", "fake"]},
                    "created_at": {"type": "string", "format": "date-time"},
                },
            },
            "failure": {
                "type": ["object", "null"],
                "properties": {"reason": {"type": "string"}, "detail": {"type": "string"}},
            },
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "completed_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Verdict": {
        "type": "object",
        "properties": {
            "p_fake": {"type": "number", "minimum": 0, "maximum": 1},
            "label": {
                "type": "string",
                "enum": ["real", "fake", "ai_generated"],
                "description": "real/fake from p_fake; ai_generated when provenance decided",
            },
            "decision": {"type": "string", "enum": ["auto_passed", "auto_flagged", "needs_review"]},
            "decision_reason": {
                "type": "string",
                "description": "What decided: model, bank_match:fake, bank_match:real, "
                "provenance:ai_generated",
                "example": "model",
            },
            "signals": {
                "type": "object",
                "description": "Each kind of evidence on its own",
                "properties": {
                    "model": {
                        "type": "object",
                        "description": "The model's score and what its thresholds alone decide",
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "p_fake": {"type": "number", "minimum": 0, "maximum": 1},
                            "label": {"type": "string", "enum": ["real", "fake"]},
                            "decision": {
                                "type": "string",
                                "enum": ["auto_passed", "auto_flagged", "needs_review"],
                            },
                        },
                    },
                    "match": {
                        "oneOf": [{"$ref": "#/components/schemas/BankMatch"}, {"type": "null"}],
                        "description": "The known-media bank entry matched; null when none",
                    },
                    "provenance": {
                        "oneOf": [{"$ref": "#/components/schemas/Provenance"}, {"type": "null"}],
                        "description": "The file's C2PA manifest; null when it carries none",
                    },
                },
            },
            "model": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
            "thresholds": {
                "type": "object",
                "properties": {"pass_below": {"type": "number"}, "flag_at": {"type": "number"}},
            },
            "created_at": {"type": "string", "format": "date-time"},
            "video": {
                "oneOf": [{"$ref": "#/components/schemas/VideoScores"}, {"type": "null"}],
                "description": "Videos only: per-frame scores and how p_fake was aggregated",
            },
            "explanation": {
                "oneOf": [{"$ref": "#/components/schemas/Explanation"}, {"type": "null"}],
                "description": "Grad-CAM of the model's fake score; null for model versions "
                "without the cam output",
            },
        },
    },
    "Explanation": {
        "type": "object",
        "properties": {
            "cam": {
                "type": "array",
                "description": "7x7 Grad-CAM map in [0, 1], rows top to bottom",
                "items": {"type": "array", "items": {"type": "number"}},
            },
            "regions": {
                "type": "array",
                "description": "Up to three hot regions, largest share of the map first",
                "items": {
                    "type": "object",
                    "properties": {
                        "box": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "description": "[x0, y0, x1, y1] in the upright original's pixels",
                        },
                        "share": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
            },
            "frames": {
                "type": "array",
                "description": "Videos only: each scored frame's map and regions",
                "items": {
                    "type": "object",
                    "properties": {
                        "timestamp_s": {"type": "number"},
                        "cam": {"type": "array", "items": {"type": "array"}},
                        "regions": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    },
    "BankMatch": {
        "type": "object",
        "description": "The known-media bank entry the item matched (PDQ / per-second vPDQ)",
        "properties": {
            "bank": {"type": "string"},
            "bank_id": {"type": "string"},
            "verdict": {"type": "string", "enum": ["fake", "real"]},
            "distance": {"type": "integer", "minimum": 0, "maximum": 256},
            "signal_type": {"type": "string", "enum": ["pdq", "vpdq"]},
            "entry_id": {"type": "integer"},
            "frame_share": {"type": "number", "description": "Videos: share of frames matched"},
            "origin": {
                "type": "object",
                "description": "Where the entry came from: a review (submission, review, "
                "reviewer) or an import (import_source, external_id, added_by)",
                "properties": {
                    "source": {"type": "string", "enum": ["review", "import", "file"]},
                    "submission": {"type": ["string", "null"]},
                    "review": {"type": ["string", "null"]},
                    "reviewer": {"type": ["string", "null"]},
                    "import_source": {"type": ["string", "null"]},
                    "external_id": {"type": ["string", "null"]},
                    "added_by": {"type": ["string", "null"]},
                },
            },
        },
    },
    "Provenance": {
        "type": "object",
        "properties": {
            "manifest": {
                "type": "string",
                "enum": ["valid", "untrusted", "invalid"],
                "description": "valid: signature and hard binding hold and the signer is "
                "trusted; untrusted: they hold, the signer is not trusted; invalid: otherwise",
            },
            "ai_generated": {
                "type": "boolean",
                "description": "An action declares trainedAlgorithmicMedia or "
                "compositeWithTrainedAlgorithmicMedia",
            },
            "digital_source_type": {"type": ["string", "null"]},
            "digital_source_types": {"type": "array", "items": {"type": "string"}},
            "claim_generator": {"type": ["string", "null"]},
            "signer": {
                "type": ["object", "null"],
                "properties": {
                    "common_name": {"type": ["string", "null"]},
                    "issuer": {"type": ["string", "null"]},
                },
            },
            "signature_valid": {"type": ["boolean", "null"]},
            "hard_binding_valid": {"type": ["boolean", "null"]},
            "validation_codes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "C2PA validation failure codes, e.g. assertion.dataHash.mismatch",
            },
            "error": {
                "type": ["string", "null"],
                "description": "Why an invalid manifest could not be read (e.g. timeout)",
            },
        },
    },
    "VideoScores": {
        "type": "object",
        "properties": {
            "rule": {"type": "string", "description": "mean of the top-k frame p_fake"},
            "k": {"type": "integer", "minimum": 1},
            "frames": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "timestamp_s": {"type": "number", "minimum": 0},
                        "p_fake": {"type": "number", "minimum": 0, "maximum": 1},
                        "scene_change": {"type": "boolean"},
                        "frame_p_fake": {
                            "type": "number",
                            "description": "The full frame's score (p_fake is the max with crops)",
                        },
                        "crops": {
                            "type": "array",
                            "description": "Face crops scored with the frame (video_faces > 0)",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "box": {"type": "array", "items": {"type": "integer"}},
                                    "p_fake": {"type": "number", "minimum": 0, "maximum": 1},
                                },
                            },
                        },
                        "driver": {
                            "type": "string",
                            "description": "What gave the frame its score: frame or face_<i>",
                        },
                    },
                },
            },
            "drivers": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The driver of each suspicious frame (frame or face_<i>)",
            },
            "suspicious_timestamps_s": {
                "type": "array",
                "items": {"type": "number"},
                "description": "Timestamps of the top-k frames, most suspicious first",
            },
        },
    },
    "SubmissionList": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Submission"}},
            "next_cursor": {"type": ["string", "null"]},
            "next": {"type": ["string", "null"], "description": "URL of the next page"},
        },
    },
    "MediaUrlRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["media_url"],
        "properties": {"media_url": {"type": "string", "format": "uri"}, **_OPTIONAL_PROPS},
    },
    "UploadRequest": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            **_OPTIONAL_PROPS,
            "metadata": {"type": "string", "description": "A JSON object as text"},
        },
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    },
}

_SUBMISSIONS = {
    "post": {
        "summary": "Submit media for moderation",
        "description": (
            "Stores the upload or URL and enqueues scoring; nothing is decoded here. Three "
            "shapes: multipart/form-data with a `file` part; application/json with a "
            "`media_url`; or the media itself as the body (" + ", ".join(RAW_TYPES) + ") with "
            "`callback_url`, `external_id` and `metadata` (JSON text) as query parameters. "
            "Uploads over the upload limit are 413 in every shape. The Idempotency-Key "
            "fingerprint covers the media's SHA-256 (or URL) and the fields, not the shape: the "
            "same bytes and fields sent raw or as multipart are the same request."
        ),
        "security": BEARER,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "schema": {"type": "string", "maxLength": 255},
            },
            *_RAW_QUERY,
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/UploadRequest"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/MediaUrlRequest"}},
                **{media_type: _RAW_BODY for media_type in RAW_TYPES},
            },
        },
        "responses": {
            "202": {
                **_json("Submission", "Accepted; poll the Location"),
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            **_problems(400, 401, 409, 413, 415, 422, 429),
        },
    },
    "get": {
        "summary": "List submissions, newest first",
        "security": BEARER,
        "parameters": [
            {
                "name": "status",
                "in": "query",
                "schema": {"type": "string", "enum": list(Status.ALL)},
            },
            {
                "name": "limit",
                "in": "query",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": 50,
                },
            },
            {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {"200": _json("SubmissionList", "One page"), **_problems(401, 422)},
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "dfmod moderation API",
        "version": "1",
        "description": "Deepfake moderation: submit media, poll or receive signed callbacks.",
    },
    "paths": {
        "/v1/submissions": _SUBMISSIONS,
        "/v1/submissions/{submission_id}": {
            "get": {
                "summary": "Get one submission with its verdict",
                "security": BEARER,
                "parameters": [
                    {
                        "name": "submission_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _json("Submission", "The submission"), **_problems(401, 404)},
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness of database, broker and Triton, each reported",
                "responses": {
                    "200": {"description": "All ready"},
                    "503": {"description": "Not ready"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Metrics"}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
        },
    },
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
        "responses": {
            "Problem": {
                "description": "An RFC 9457 problem",
                "content": {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
        },
    },
}


def document() -> dict[str, Any]:
    """Returns a copy of the OpenAPI document."""
    return copy.deepcopy(_DOCUMENT)
