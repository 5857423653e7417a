"""Pydantic validation errors as the API's 422 ``errors`` list: one entry per field, each saying
what was expected in the words of :data:`moderation.api_schema.EXPECTED`."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ValidationError

from moderation.api_schema import EXPECTED, MAX_URL_LENGTH
from moderation.ssrf import OutboundBlocked, check_url
from webhook_api.problems import ApiProblem, validation_problem

logger = logging.getLogger(__name__)

_URL_FIELDS = ("media_url", "callback_url")


def _url_message(error: Any) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "string_type":
        return "expected an http(s) URL string"
    if kind == "string_too_long":
        return f"expected at most {MAX_URL_LENGTH} characters"
    if kind == "string_pattern_mismatch" and isinstance(value, str):
        try:
            check_url(value)  # says why when the scheme, host or port is wrong
        except OutboundBlocked as exc:
            return str(exc)
    return "expected an http(s) URL such as https://host[:port]/path"


def _message(error: Any, allowed: tuple[str, ...], unknown: str) -> str:
    field = str(error["loc"][0]) if error["loc"] else "(body)"
    if error["type"] == "extra_forbidden":
        return f"{unknown}; expected only {', '.join(allowed)}"
    if error["type"] == "missing":
        return f"required; expected {EXPECTED.get(field, 'a value')}"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if field in _URL_FIELDS:
        return _url_message(error)
    return f"expected {EXPECTED.get(field, error['msg'])}"


def field_errors(
    exc: ValidationError, allowed: tuple[str, ...], *, unknown: str = "unknown field"
) -> list[dict[str, str]]:
    """Returns ``{"field", "message"}`` per error, unknown fields first, then in ``allowed``
    order."""
    rank = {name: i for i, name in enumerate(allowed)}
    errors = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "(body)"
        key = (error["type"] != "extra_forbidden", rank.get(field, -1), field)
        errors.append((key, {"field": field, "message": _message(error, allowed, unknown)}))
    errors.sort(key=lambda item: item[0])
    return [entry for _, entry in errors]


def check(
    model: type[BaseModel],
    values: Any,
    allowed: tuple[str, ...],
    *,
    context: dict[str, Any] | None = None,
    unknown: str = "unknown field",
) -> tuple[Any, list[dict[str, str]]]:
    """Returns ``(model instance or None, errors)`` for ``values``."""
    try:
        return model.model_validate(values, context=context), []
    except ValidationError as exc:
        return None, field_errors(exc, allowed, unknown=unknown)


def validate(
    model: type[BaseModel],
    values: Any,
    allowed: tuple[str, ...],
    *,
    context: dict[str, Any] | None = None,
    unknown: str = "unknown field",
    more: list[dict[str, str]] | None = None,
) -> Any:
    """Returns ``model`` validated from ``values``; raises a 422 listing every invalid field
    (``more``: errors found before, reported with these)."""
    result, errors = check(model, values, allowed, context=context, unknown=unknown)
    errors = [*(more or []), *errors]
    if errors:
        raise validation_problem(errors)
    return result


__all__ = ["ApiProblem", "check", "field_errors", "validate"]
