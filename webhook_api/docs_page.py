"""``/docs``: the OpenAPI document as one server-rendered HTML page, with no external assets.

The page is generated from :func:`webhook_api.openapi.document` at request time, so it shows the
same contract the API validates with: operations with their parameters, bodies and statuses, then
every schema with its fields. Schema references become in-page links.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import render_template

from webhook_api.openapi import document

logger = logging.getLogger(__name__)

METHOD_ORDER = ("get", "post", "put", "patch", "delete")
_CONSTRAINTS = (
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "default",
    "minItems",
)


def type_of(schema: dict[str, Any]) -> str:
    """Returns a short reading of a schema's type: ``Name``, ``string | null``, ``array of X``."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema or "oneOf" in schema:
        return " | ".join(type_of(o) for o in schema.get("anyOf", schema.get("oneOf", [])))
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " | ".join(kind)
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_of(schema['additionalProperties'])}"
    return str(kind)


def constraints(schema: dict[str, Any]) -> str:
    """Returns a schema's constraints as ``name: value`` text."""
    found = {k: schema[k] for k in _CONSTRAINTS if k in schema}
    for option in schema.get("anyOf", []):
        found.update({k: option[k] for k in _CONSTRAINTS if k in option})
    return ", ".join(f"{k}: {v}" for k, v in found.items())


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "type": type_of(prop),
            "required": name in required,
            "description": prop.get("description", ""),
            "constraints": constraints(prop),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def _operations(items: dict[str, Any]) -> list[dict[str, Any]]:
    """Returns what the page shows of each operation of ``items`` (the document's ``paths``, or
    its ``webhooks``, whose keys are event names)."""
    operations = []
    for path, item in items.items():
        for method in (m for m in METHOD_ORDER if m in item):
            op = item[method]
            body = op.get("requestBody", {}).get("content", {})
            operations.append(
                {
                    "id": op.get("operationId", f"{method}-{path}"),
                    "method": method.upper(),
                    "path": path,
                    "op": op,
                    "parameters": [
                        {
                            **p,
                            "type": type_of(
                                p.get("schema")
                                or next(iter(p.get("content", {}).values()))["schema"]
                            ),
                            "constraints": constraints(p.get("schema", {})),
                        }
                        for p in op.get("parameters", [])
                    ],
                    "bodies": [(media, type_of(c.get("schema", {}))) for media, c in body.items()],
                    "responses": [
                        (
                            code,
                            r["description"],
                            [
                                (m, type_of(c.get("schema", {})))
                                for m, c in r.get("content", {}).items()
                            ],
                        )
                        for code, r in op["responses"].items()
                    ],
                }
            )
    return operations


def render() -> str:
    """Returns the HTML page of the OpenAPI document."""
    doc = document()
    schemas = [
        {"name": name, "description": schema.get("description", ""), "fields": _fields(schema)}
        for name, schema in doc["components"]["schemas"].items()
    ]
    return render_template(
        "docs.html",
        info=doc["info"],
        operations=_operations(doc["paths"]),
        webhooks=_operations(doc["webhooks"]),
        schemas=schemas,
    )
