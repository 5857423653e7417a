"""Parsing and validating ``POST /v1/submissions`` bodies without decoding any media.

Multipart with a ``file``, JSON with a ``media_url``, or the media as the body (fields as query
parameters); unknown fields are refused (422), URLs pass the SSRF guard, and uploads are accepted
whatever their bytes (the worker decides what is an image).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from flask import Request
from werkzeug.datastructures import MultiDict

from moderation.api_schema import (
    JSON_FIELDS,
    OPTIONAL_FIELDS,
    RAW_TYPES,
    RAW_VIDEO_TYPES,
    MediaUrlRequest,
    SubmissionFields,
)
from moderation.ssrf import Network
from webhook_api.multipart import read_input, read_up_to
from webhook_api.problems import ApiProblem, validation_problem
from webhook_api.validation import check, validate

logger = logging.getLogger(__name__)

__all__ = ["JSON_FIELDS", "OPTIONAL_FIELDS", "RAW_TYPES", "RAW_VIDEO_TYPES", "Intake"]


@dataclass
class Intake:
    """A validated submission request: exactly one of ``data`` (upload) or ``media_url``."""

    data: bytes | None = None
    sha256: str | None = None  # of ``data``, hashed once for the fingerprint and the blob store
    filename: str | None = None
    content_type: str | None = None
    media_url: str | None = None
    callback_url: str | None = None
    external_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Returns a hash of what was asked for: the media's SHA-256 or URL and the optional
        fields, whatever the body's shape (multipart boundaries and key order ignored)."""
        canonical = {
            "sha256": self.sha256,
            "media_url": self.media_url,
            "callback_url": self.callback_url,
            "external_id": self.external_id,
            "metadata": self.metadata,
        }
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _too_large(what: str, max_bytes: int) -> ApiProblem:
    return ApiProblem(
        413,
        "payload-too-large",
        "Payload too large",
        f"{what} exceeds {max_bytes} bytes; expected at most {max_bytes}",
        max_bytes=max_bytes,
    )


def _unknown(names: list[str], allowed: tuple[str, ...]) -> list[dict[str, str]]:
    return [
        {"field": name, "message": f"unknown field; expected only {', '.join(allowed)}"}
        for name in sorted(names)
    ]


def _query_values(request: Request) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Returns the optional fields given as query parameters (any body shape) and the errors of
    unknown or repeated ones."""
    args = request.args
    errors = [
        {
            "field": name,
            "message": f"unknown query parameter; expected only {', '.join(OPTIONAL_FIELDS)}",
        }
        for name in sorted(k for k in args if k not in OPTIONAL_FIELDS)
    ]
    errors += [
        {"field": name, "message": f"given {len(args.getlist(name))} times; expected it once"}
        for name in OPTIONAL_FIELDS
        if len(args.getlist(name)) > 1
    ]
    return _text_values(args, errors), errors


def _merge(
    body: dict[str, Any], query: dict[str, Any], allowlist: tuple[Network, ...], errors: list
) -> dict[str, Any]:
    """Returns the query's fields updated with the body's: where both give one, the body's
    value is used, and the query's must be valid all the same."""
    shadowed = {k: v for k, v in query.items() if k in body}
    if shadowed:
        context = {"allowlist": allowlist}
        errors += check(SubmissionFields, shadowed, OPTIONAL_FIELDS, context=context)[1]
    return {**query, **body}


def _fields(
    values: dict[str, Any], allowlist: tuple[Network, ...], errors: list
) -> SubmissionFields:
    return validate(
        SubmissionFields,
        values,
        OPTIONAL_FIELDS,
        context={"allowlist": allowlist},
        more=errors,
    )


def parse_json(request: Request, allowlist: tuple[Network, ...]) -> Intake:
    """Returns the intake of a JSON body; raises 400 (malformed) or 422 (invalid)."""
    try:
        body = json.loads(request.get_data(cache=True) or b"")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiProblem(
            400,
            "malformed-json",
            "Malformed JSON",
            f"the body is not valid JSON ({exc}); expected an object such as "
            '{"media_url": "https://..."}',
        ) from exc
    if not isinstance(body, dict):
        raise validation_problem([{"field": "(body)", "message": "expected a JSON object"}])
    query, errors = _query_values(request)
    values = _merge({k: v for k, v in body.items() if v is not None}, query, allowlist, errors)
    parsed: MediaUrlRequest = validate(
        MediaUrlRequest,
        values,
        JSON_FIELDS,
        context={"allowlist": allowlist},
        more=errors,
    )
    return Intake(
        media_url=parsed.media_url,
        callback_url=parsed.callback_url,
        external_id=parsed.external_id,
        metadata=parsed.metadata or {},
    )


def _text_values(source: MultiDict[str, str], errors: list) -> dict[str, Any]:
    """Returns the optional fields given as text (form fields, query parameters)."""
    values: dict[str, Any] = {}
    for name in OPTIONAL_FIELDS:
        raw = source.get(name)
        if raw is None or raw == "":
            continue
        if name == "metadata":
            try:
                values[name] = json.loads(raw)
            except (ValueError, RecursionError):
                errors.append({"field": "metadata", "message": "expected a JSON object as text"})
                continue
        else:
            values[name] = raw
    return values


def parse_multipart(request: Request, allowlist: tuple[Network, ...], max_bytes: int) -> Intake:
    """Returns the intake of a multipart upload; raises 413 or 422 problems."""
    query, errors = _query_values(request)
    errors += _unknown(
        [k for k in request.form if k not in OPTIONAL_FIELDS], ("file", *OPTIONAL_FIELDS)
    )
    errors += _unknown([k for k in request.files if k != "file"], ("file", *OPTIONAL_FIELDS))
    uploads = request.files.getlist("file")
    if len(uploads) != 1:
        errors.append(
            {"field": "file", "message": f"expected exactly one 'file' part, got {len(uploads)}"}
        )
    values = _merge(_text_values(request.form, errors), query, allowlist, errors)
    data = uploads[0].read(max_bytes + 1) if len(uploads) == 1 else b""
    if len(uploads) == 1 and not data:
        errors.append({"field": "file", "message": "the file is empty; expected image bytes"})
    if len(data) > max_bytes:
        raise _too_large("the file", max_bytes)
    fields = _fields(values, allowlist, errors)
    upload = uploads[0]
    return Intake(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        filename=_recorded(upload.filename, 255),
        content_type=_recorded(upload.mimetype, 100),
        callback_url=fields.callback_url,
        external_id=fields.external_id,
        metadata=fields.metadata or {},
    )


def _recorded(value: str | None, length: int) -> str | None:
    """Returns a client-given name as recorded: without NUL (PostgreSQL refuses it), shortened."""
    return (value or "").replace("\x00", "")[:length] or None


def is_raw_media_type(mimetype: str) -> bool:
    """Returns whether a Content-Type (without parameters) is one of :data:`RAW_TYPES`."""
    if mimetype.startswith("image/"):
        return len(mimetype) > len("image/")
    return mimetype in RAW_VIDEO_TYPES or mimetype == "application/octet-stream"


def _read_body(request: Request, max_bytes: int) -> bytes:
    """Returns the whole body, refusing (413) one over ``max_bytes`` before reading it if its
    Content-Length says so, else as soon as it grows past the limit (chunked bodies)."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise _too_large("the body", max_bytes)
    if length is not None:
        return read_input(request.environ, length)
    data = read_up_to(request.stream, max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large("the body", max_bytes)
    return data


def parse_raw(request: Request, allowlist: tuple[Network, ...], max_bytes: int) -> Intake:
    """Returns the intake of a raw media body with its fields in the query; raises 413 or 422."""
    values, errors = _query_values(request)
    data = _read_body(request, max_bytes)
    if not data:
        errors.append(
            {"field": "(body)", "message": "the body is empty; expected the media's bytes"}
        )
    fields = _fields(values, allowlist, errors)
    return Intake(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=request.mimetype[:100],
        callback_url=fields.callback_url,
        external_id=fields.external_id,
        metadata=fields.metadata or {},
    )


def parse_submission(request: Request, allowlist: tuple[Network, ...], max_bytes: int) -> Intake:
    """Returns the validated intake of a submission request, whatever its content type."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        return parse_multipart(request, allowlist, max_bytes)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return parse_json(request, allowlist)
    if is_raw_media_type(mimetype):
        return parse_raw(request, allowlist, max_bytes)
    raise ApiProblem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        f"Content-Type {mimetype or '(none)'!r} is not accepted; expected multipart/form-data "
        "with a 'file' part, application/json with a 'media_url', or the media itself as the "
        f"body ({', '.join(RAW_TYPES)}) with the optional fields as query parameters",
    )
