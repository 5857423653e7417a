"""Standard Webhooks signing (https://www.standardwebhooks.com/), used for every callback.

``webhook-signature`` is ``v1,`` + base64(HMAC-SHA256(key, "id.timestamp.body")) with the tenant's
``whsec_`` secret; :func:`verify` is the same check for our own tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A webhook that does not verify; the message says which check failed."""


def new_secret() -> str:
    """Returns a fresh ``whsec_`` secret holding 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("expected a secret of the form whsec_<base64>") from exc


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """Returns the ``webhook-signature`` value ``v1,<base64>`` for one message."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + _as_bytes(body)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, msg_id: str, body: bytes | str, *, timestamp: int | None = None) -> dict:
    """Returns the three Standard Webhooks headers for one delivery attempt."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def signature_header(
    secrets_: list[str] | tuple[str, ...], msg_id: str, timestamp: int, body: bytes | str
) -> str:
    """Returns a ``webhook-signature`` value with one space-separated ``v1,`` entry per secret.

    During a rotation overlap the current and the previous secret both sign, so a receiver still
    holding either one verifies the message.
    """
    if not secrets_:
        raise ValueError("expected at least one secret to sign with")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def verify(
    secret: str,
    msg_id: str,
    timestamp: int | str,
    body: bytes | str,
    signature_header: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Checks a received webhook; raises :class:`SignatureError` unless one v1 signature matches.

    ``signature_header`` may list several space-separated ``v1,<b64>`` entries (key rotation).
    """
    try:
        ts = int(timestamp)
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"expected an integer webhook-timestamp, got {timestamp!r}") from exc
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError(f"webhook-timestamp {ts} is more than {tolerance_s}s from now")
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for entry in signature_header.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureError("no v1 signature in webhook-signature matches the body")
