"""Outbound HTTP for the worker (media fetches and callbacks) through the SSRF guard.

Every request goes through :func:`moderation.ssrf.safe_session`, which checks the resolved address
against ``DFMOD_OUTBOUND_ALLOWLIST`` and connects to the address it checked. Redirects are never
followed here: callers decide (callbacks treat them as failure, fetches re-check each hop). All
failures become :class:`OutboundError` with a message saying what happened.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from moderation.settings import Settings
from moderation.ssrf import OutboundBlocked, safe_session

logger = logging.getLogger(__name__)


class OutboundError(RuntimeError):
    """An outbound request that did not produce an HTTP answer; ``blocked`` for SSRF refusals."""

    def __init__(self, message: str, *, blocked: bool = False) -> None:
        super().__init__(message)
        self.blocked = blocked


def request(
    method: str, url: str, *, settings: Settings, timeout_s: float, **kwargs: Any
) -> requests.Response:
    """Returns the streamed response of one guarded request (redirects not followed).

    ``timeout_s`` bounds connecting and each wait for data; callers bound the total time.
    """
    session = safe_session(allowlist=settings.outbound_allowlist)
    try:
        return session.request(
            method,
            url,
            timeout=(timeout_s, timeout_s),
            allow_redirects=False,
            stream=True,
            **kwargs,
        )
    except OutboundBlocked as exc:
        raise OutboundError(f"blocked by the SSRF guard: {exc}", blocked=True) from exc
    except requests.Timeout as exc:
        raise OutboundError(f"no answer from {url} within {timeout_s:g}s") from exc
    except requests.RequestException as exc:
        raise OutboundError(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        session.close()
