"""schemathesis hooks for the contract test (loaded through ``SCHEMATHESIS_HOOKS``).

Whether a URL is accepted depends on where its host resolves (the SSRF guard), which no schema
can state. A schema-valid ``media_url`` or ``callback_url`` is therefore pointed at the loopback
receiver that the stack allow-lists (``DFMOD_FUZZ_URL``), so the fuzzer judges everything else;
schema-invalid URLs are left as generated and must still be refused.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis

from moderation.api_schema import MAX_URL_LENGTH, URL_PATTERN

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


def _binary(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray)) or hasattr(value, "data")


def _unsendable(case: Any) -> bool:
    """Whether a negative case's invalid part turns valid on the wire: any body bytes are a valid
    raw upload; a multipart field that is null, a number or a boolean becomes valid text, and a
    file part that is text is bytes all the same; a query ``metadata`` that is text instead of an
    object is sent as the same text."""
    media_type = str(case.media_type or "")
    body = case.body
    if media_type.startswith(("image/", "video/", "application/octet-stream")):
        return not _binary(body)
    if media_type == "multipart/form-data" and isinstance(body, dict):
        fields = [v for k, v in body.items() if k not in ("file", "metadata")]
        file = body.get("file", b"")
        if any(not isinstance(v, str) for v in fields) or not _binary(file):
            return True
    query = case.query if isinstance(case.query, dict) else {}
    return isinstance(query.get("metadata"), str)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return True
    return not _unsendable(case)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keeps every failure but "invalid data accepted" in the stateful phase.

    That phase follows the document's links (POST, then GET by the returned id); whether invalid
    data is refused is the coverage and fuzzing phases' job. Its negative cases bypass
    ``filter_case``, and several are valid once serialised (a null form field is sent as the text
    "null", an object as a raw body's bytes)."""
    meta = case.meta
    stateful = meta is not None and str(meta.phase.name.value) == "stateful"
    return not (stateful and type(failure).__name__ == "AcceptedNegativeData")
