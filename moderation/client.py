"""A small typed client of the dfmod HTTP API (``requests`` only), and webhook verification.

:class:`Client` submits, reads, waits and lists, returning
:class:`~moderation.api_schema.SubmissionOut`; errors raise :class:`ApiError` with the RFC 9457
problem; :func:`verify_webhook` checks a callback's signature. The README shows it in use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

from moderation.api_schema import SubmissionList, SubmissionOut

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"auto_passed", "auto_flagged", "needs_review", "decided", "failed"})
DEFAULT_TOLERANCE_S = 300


class ApiError(Exception):
    """An error answer of the API: ``status`` and the problem document (``type``, ``detail``)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        self.type = str(problem.get("type", ""))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.type}: {self.detail}")

    @property
    def retry_after_s(self) -> float | None:
        """Returns how long a 429 asked to wait, or None."""
        value = self.problem.get("retry_after_s")
        return float(value) if isinstance(value, (int, float)) else None


class WebhookVerificationError(ValueError):
    """A callback whose signature or timestamp does not verify."""


class Client:
    """The dfmod API at ``base_url`` for one tenant's ``api_key``."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {api_key}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool."""
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(
            method, f"{self.base_url}{path}", timeout=self.timeout_s, **kwargs
        )
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500]}
            raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})
        return response.json()

    def _submission(self, method: str, path: str, **kwargs: Any) -> SubmissionOut:
        return SubmissionOut.model_validate(self._request(method, path, **kwargs))

    @staticmethod
    def _fields(
        callback_url: str | None, external_id: str | None, metadata: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        values = {"callback_url": callback_url, "external_id": external_id, "metadata": metadata}
        return {k: v for k, v in values.items() if v is not None}

    @staticmethod
    def _key(idempotency_key: str | None) -> dict[str, str]:
        return {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}

    def submit_bytes(
        self,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        external_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SubmissionOut:
        """Submits media bytes as the raw body (fields as query parameters); returns the 202
        body."""
        params = self._fields(callback_url, external_id, metadata)
        if "metadata" in params:
            params["metadata"] = json.dumps(params["metadata"])
        return self._submission(
            "POST",
            "/v1/submissions",
            data=data,
            params=params,
            headers={"Content-Type": content_type, **self._key(idempotency_key)},
        )

    def submit_file(
        self,
        path: str | os.PathLike[str],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        external_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SubmissionOut:
        """Submits a file as a multipart upload; returns the 202 body."""
        fields = self._fields(callback_url, external_id, metadata)
        if "metadata" in fields:
            fields["metadata"] = json.dumps(fields["metadata"])
        with open(path, "rb") as handle:
            return self._submission(
                "POST",
                "/v1/submissions",
                files={"file": (Path(path).name, handle, "application/octet-stream")},
                data=fields,
                headers=self._key(idempotency_key),
            )

    def submit_url(
        self,
        media_url: str,
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        external_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SubmissionOut:
        """Submits a media URL for the worker to fetch; returns the 202 body."""
        body = {"media_url": media_url, **self._fields(callback_url, external_id, metadata)}
        return self._submission(
            "POST", "/v1/submissions", json=body, headers=self._key(idempotency_key)
        )

    def get(self, submission_id: str) -> SubmissionOut:
        """Returns one submission."""
        return self._submission("GET", f"/v1/submissions/{submission_id}")

    def wait(
        self,
        submission_id: str,
        *,
        timeout_s: float = 120.0,
        first_delay_s: float = 0.1,
        max_delay_s: float = 5.0,
    ) -> SubmissionOut:
        """Returns the submission once it is final (scored, decided or failed), polling with
        exponential back-off; raises TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        delay = first_delay_s
        while True:
            submission = self.get(submission_id)
            if submission.status in FINAL_STATUSES:
                return submission
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{submission_id} is still {submission.status} after {timeout_s}s"
                )
            time.sleep(min(delay, left))
            delay = min(delay * 2, max_delay_s)

    def list_page(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> SubmissionList:
        """Returns one page: ``items``, ``next_cursor`` (None on the last page), ``next``."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        return SubmissionList.model_validate(self._request("GET", "/v1/submissions", params=params))

    def iter_submissions(
        self, *, status: str | None = None, page_size: int = 50
    ) -> Iterator[SubmissionOut]:
        """Yields every submission, newest first, following the cursors."""
        cursor = None
        while True:
            page = self.list_page(status=status, limit=page_size, cursor=cursor)
            yield from page.items
            cursor = page.next_cursor
            if cursor is None:
                return


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign_webhook(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Returns the ``v1,`` signature Standard Webhooks defines for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    secret: str | list[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Returns a callback's JSON once one of its ``v1,`` signatures matches a secret (several
    while rotating) and its timestamp is within ``tolerance_s``; raises
    :class:`WebhookVerificationError` otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, stamp = lowered["webhook-id"], lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"].split()
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from exc
    try:
        age = abs((time.time() if now is None else now) - int(stamp))
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from exc
    if age > tolerance_s:
        raise WebhookVerificationError(f"webhook-timestamp is {age:.0f}s away from now")
    secrets = [secret] if isinstance(secret, str) else secret
    expected = {sign_webhook(s, msg_id, stamp, body) for s in secrets}
    if not any(hmac.compare_digest(sig, want) for sig in signatures for want in expected):
        raise WebhookVerificationError("no v1 signature matches the secret")
    payload: dict[str, Any] = json.loads(body)
    return payload
