"""schemathesis hooks for the contract test (loaded through ``SCHEMATHESIS_HOOKS``).

``before_call``: whether a URL is accepted depends on where its host resolves (the SSRF guard),
which no schema can state. A schema-valid ``media_url`` or ``callback_url`` is therefore pointed
at the loopback receiver that the stack allow-lists (``DFMOD_FUZZ_URL``), so the fuzzer judges
everything else; schema-invalid URLs are left as generated and must still be refused.

``filter_failure``: an "invalid data accepted" failure stands only if the request as it went over
the wire is invalid by the document (see its docstring).
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema_rs
import schemathesis
from werkzeug.formparser import parse_form_data

from moderation.api_schema import IDEMPOTENCY_KEY_PATTERN, MAX_URL_LENGTH, URL_PATTERN

URL_FIELDS = ("media_url", "callback_url")


def _valid(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_URL_LENGTH
        and re.search(URL_PATTERN, value) is not None
        and not value.endswith("\n")  # JSON Schema's $ is the very end; Python's also before \n
    )


def _point_home(values: Any) -> None:
    target = os.environ["DFMOD_FUZZ_URL"]
    if isinstance(values, dict):
        for name in URL_FIELDS:
            if _valid(values.get(name)):
                values[name] = target


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    _point_home(case.query)
    _point_home(case.body)


def _validator(schema: dict[str, Any], document: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for({**schema, "components": document.get("components", {})})


def _query_is_valid(operation: dict[str, Any], url: str, document: dict[str, Any]) -> bool:
    sent = parse_qs(urlsplit(url).query, keep_blank_values=True)
    for parameter in (p for p in operation.get("parameters", []) if p["in"] == "query"):
        for text in sent.pop(parameter["name"], []):
            if "content" in parameter:  # JSON text
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    return False
                schema = next(iter(parameter["content"].values()))["schema"]
            else:
                value, schema = text, parameter["schema"]
                if schema.get("type") == "integer":
                    if not text.isascii() or not text.isdigit():
                        return False
                    value = int(text)
            if not _validator(schema, document).is_valid(value):
                return False
    return not sent  # a parameter the document does not name is invalid


def _form(request: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(request.body or b"")),
        "wsgi.input": io.BytesIO(request.body or b""),
    }
    _, form, files = parse_form_data(environ)
    return form, files


def _body_is_valid(operation: dict[str, Any], request: Any, document: dict[str, Any]) -> bool:
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip()
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    content = operation.get("requestBody", {}).get("content", {})
    if media_type == "application/json":
        try:
            value = json.loads(body)
        except ValueError:
            return False
        return _validator(content[media_type]["schema"], document).is_valid(value)
    if media_type == "multipart/form-data":
        form, files = _form(request)
        if list(files) != ["file"] or len(files.getlist("file")) != 1:
            return False
        values: dict[str, Any] = {"file": "bytes"}
        for name, text in form.items(multi=True):
            if name in values:
                return False
            try:
                values[name] = json.loads(text) if name == "metadata" else text
            except ValueError:
                return False
        schema = dict(content[media_type]["schema"])
        return files["file"].read() != b"" and _validator(schema, document).is_valid(values)
    raw = media_type.startswith("image/") or media_type in content
    return raw and media_type != "image/" and len(body) > 0


def _sent_request_is_valid(case: Any, response: Any) -> bool:
    """Whether the request as it went over the wire satisfies the document: its query,
    Idempotency-Key and body read the way the document says they are sent."""
    document = case.operation.schema.raw_schema
    operation = case.operation.definition.raw
    request = response.request
    key = request.headers.get("Idempotency-Key")
    if key is not None and not re.search(IDEMPOTENCY_KEY_PATTERN, key):
        return False
    if not _query_is_valid(operation, request.url, document):
        return False
    return request.body is None or _body_is_valid(operation, request, document)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Drops an "invalid data accepted" failure when the request as sent is valid by the
    document.

    The generator marks a case negative before serialising it, and several of its mutations do
    not survive serialisation (a null form field is sent as the text "null", an object as a raw
    body's bytes, a JSON parameter that became text is the same text). The request that went
    over the wire is judged here by the document itself; one it calls invalid still fails."""
    if type(failure).__name__ != "AcceptedNegativeData":
        return True
    return not _sent_request_is_valid(case, response)
