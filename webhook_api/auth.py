"""Bearer API-key authentication: resolves ``Authorization: Bearer <key>`` to a tenant."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import g, request

from moderation.db import session_scope
from moderation.tenants import TenantInfo, authenticate
from webhook_api.problems import ApiProblem
from webhook_api.state import state

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _unauthorized(detail: str, error: str | None = None) -> ApiProblem:
    challenge = 'Bearer realm="dfmod"' + (f', error="{error}"' if error else "")
    return ApiProblem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": challenge}
    )


def current_tenant() -> TenantInfo:
    """Returns the tenant that authenticated this request."""
    return cast(TenantInfo, g.tenant)


def require_tenant(view: F) -> F:
    """Decorates a view so it runs only for a valid tenant API key (else 401)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise _unauthorized("expected an 'Authorization: Bearer <API key>' header")
        if scheme.lower() != "bearer" or not key.strip():
            raise _unauthorized("expected the Bearer scheme: 'Bearer <API key>'", "invalid_request")
        with session_scope(state().session_factory, read_only=True) as session:
            tenant = authenticate(session=session, api_key=key.strip())
        if tenant is None:
            raise _unauthorized(
                "the API key is not valid; expected a key from 'dfmod tenant create'",
                "invalid_token",
            )
        g.tenant = tenant
        return view(*args, **kwargs)

    return cast(F, wrapper)
