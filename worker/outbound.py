"""Outbound HTTP for the worker (media fetches and callbacks) through the SSRF guard.

Redirects are never followed here; failures become :class:`OutboundError`. Each thread reuses one
guarded session per allow-list, and its connections; cookies are cleared after every request.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import requests

from moderation.settings import Settings
from moderation.ssrf import OutboundBlocked, safe_session

logger = logging.getLogger(__name__)


_local = threading.local()


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
    session = _session(settings.outbound_allowlist)
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
        # Connections are kept for the next request to the same host and address (the guard
        # re-checks it); cookies are never kept.
        session.cookies.clear()


def _session(allowlist: str) -> requests.Session:
    """Returns this thread's guarded session for ``allowlist`` (built on first use)."""
    sessions: dict[str, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(allowlist)
    if session is None:
        session = sessions[allowlist] = safe_session(allowlist=allowlist)
    return session


# An answer at most this long is read to its end so that its connection can be kept.
KEEP_AFTER_BYTES = 64 * 1024


def release(response: requests.Response) -> None:
    """Reads an answer of at most :data:`KEEP_AFTER_BYTES` to its end, so that closing the
    response keeps its connection for the next request to the host; a longer answer, or one
    that fails or stalls (``timeout_s`` per read), is left unread and its connection closed."""
    read = 0
    try:
        for chunk in response.iter_content(8192):
            read += len(chunk)
            if read > KEEP_AFTER_BYTES:
                return
    except requests.RequestException as exc:
        logger.debug("answer not read to its end, its connection is dropped: %s", exc)
