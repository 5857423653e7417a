"""Fetching a submission's ``media_url``: guarded, bounded, sniffed, stored as a blob.

Every hop passes the SSRF guard (at most :data:`MAX_REDIRECTS`); size and time are limited and the
first bytes sniffed. Failures end the submission ``failed`` and are not retried.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import requests
from sqlalchemy.orm import Session, sessionmaker

from moderation.blobs import BlobStore
from moderation.db import session_scope
from moderation.models import FailureReason, Status, Submission, utcnow
from moderation.preprocess import UNSUPPORTED_MEDIA, sniff_format
from moderation.settings import Settings
from worker import leases, outbound
from worker.scoring import fail_submission

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
SNIFF_BYTES = 64
FETCHABLE = (Status.RECEIVED, Status.QUEUED, Status.FETCHING)


class FetchError(Exception):
    """A media URL that could not be fetched; ``reason`` is the submission's failure reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FetchOutcome(str, enum.Enum):
    """What :func:`fetch_media` did."""

    STORED = "stored"  # bytes stored, submission queued for scoring
    FAILED = "failed"
    NOOP = "noop"


@dataclass(frozen=True)
class FetchResult:
    outcome: FetchOutcome
    delivery_id: str | None = None


def _abort(response: requests.Response) -> None:
    """Ends a read blocked on the socket: closing alone does not wake it, shutting it down does."""
    # urllib3 >= 2.3 (older: AttributeError, and only the close below, which a trickle outlasts)
    with contextlib.suppress(AttributeError, ValueError, RuntimeError, OSError):
        response.raw.shutdown()  # the blocked read then sees the end of the stream
    response.close()


def _read_body(response: requests.Response, *, url: str, max_bytes: int, deadline: float) -> bytes:
    """Returns the body; a timer shuts the connection at the deadline so a trickle cannot stall."""
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _abort, [response])
    watchdog.daemon = True
    watchdog.start()
    body = bytearray()
    sniffed = False
    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(FailureReason.TOO_LARGE, f"{url} sent more than {max_bytes} bytes")
            if not sniffed and len(body) >= SNIFF_BYTES:
                sniffed = True
                if sniff_format(bytes(body[:SNIFF_BYTES])) is None:
                    raise FetchError(
                        UNSUPPORTED_MEDIA, f"{url} did not send image bytes; expected an image"
                    )
    except (OSError, ValueError, AttributeError) as exc:
        if time.monotonic() >= deadline:
            raise FetchError(
                FailureReason.FETCH_FAILED, f"{url} took too long to send its body"
            ) from exc
        raise FetchError(FailureReason.FETCH_FAILED, f"reading {url} failed: {exc}") from exc
    finally:
        watchdog.cancel()
    if time.monotonic() > deadline:
        raise FetchError(FailureReason.FETCH_FAILED, f"{url} took too long to send its body")
    return bytes(body)


def _check_answer(response: requests.Response, url: str, max_bytes: int) -> None:
    code = response.status_code
    if code != 200:
        raise FetchError(FailureReason.FETCH_FAILED, f"{url} answered HTTP {code}; expected 200")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise FetchError(
            FailureReason.TOO_LARGE, f"{url} declares {length} bytes; expected at most {max_bytes}"
        )


def download(url: str, *, settings: Settings) -> bytes:
    """Returns the bytes at ``url`` within the limits; raises :class:`FetchError` otherwise."""
    deadline = time.monotonic() + settings.fetch_timeout_s
    for _hop in range(MAX_REDIRECTS + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            response = outbound.request("GET", url, settings=settings, timeout_s=left)
        except outbound.OutboundError as exc:
            raise FetchError(FailureReason.FETCH_FAILED, str(exc)) from exc
        with response:
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            _check_answer(response, url, settings.max_upload_bytes)
            return _read_body(
                response, url=url, max_bytes=settings.max_upload_bytes, deadline=deadline
            )
        break
    else:
        raise FetchError(FailureReason.FETCH_FAILED, f"more than {MAX_REDIRECTS} redirects")
    raise FetchError(
        FailureReason.FETCH_FAILED, f"no complete answer within {settings.fetch_timeout_s:g}s"
    )


def _claim(factory: sessionmaker[Session], submission_id: str, settings: Settings) -> str | None:
    """Moves a fetchable submission to ``fetching`` under this worker's lease; returns its URL,
    "" when its bytes are stored already, None when there is nothing to do (finished, or fetched
    by another live worker)."""
    with session_scope(factory) as session:
        sub = session.get(Submission, submission_id, with_for_update=True)
        if sub is None or sub.status not in FETCHABLE or not sub.media_url:
            return None
        if sub.blob_sha256 is not None:
            return ""
        if not leases.may_claim(
            status=sub.status,
            lease_owner=sub.lease_owner,
            lease_expires_at=sub.lease_expires_at,
            busy=Status.FETCHING,
        ):
            return None
        sub.status, sub.attempts = Status.FETCHING, sub.attempts + 1
        sub.lease_owner, sub.lease_expires_at = leases.owner(), leases.expiry(settings, utcnow())
        return sub.media_url


def _store(factory: sessionmaker[Session], submission_id: str, sha256: str, size: int) -> bool:
    with session_scope(factory) as session:
        sub = session.get(Submission, submission_id)
        if sub is None or sub.status not in FETCHABLE:
            return False
        sub.blob_sha256, sub.size_bytes, sub.status = sha256, size, Status.QUEUED
        sub.lease_owner, sub.lease_expires_at = None, None  # handed over to the scoring message
        return True


def fetch_media(
    *,
    submission_id: str,
    session_factory: sessionmaker[Session],
    blobs: BlobStore,
    settings: Settings,
) -> FetchResult:
    """Fetches and stores a submission's media; STORED means it is ready to be scored."""
    with leases.running(submission_id) as first:
        if not first:  # this process fetches it already
            return FetchResult(FetchOutcome.NOOP)
        return _fetch(submission_id, session_factory, blobs, settings)


def _fetch(
    submission_id: str, session_factory: sessionmaker[Session], blobs: BlobStore, settings: Settings
) -> FetchResult:
    url = _claim(session_factory, submission_id, settings)
    if url is None:
        return FetchResult(FetchOutcome.NOOP)
    if url == "":
        return FetchResult(FetchOutcome.STORED)
    try:
        data = download(url, settings=settings)
    except FetchError as exc:
        failed = fail_submission(
            submission_id=submission_id,
            session_factory=session_factory,
            reason=exc.reason,
            detail=exc.detail,
        )
        return FetchResult(FetchOutcome.FAILED, failed.delivery_id)
    sha256 = blobs.put(data)
    stored = _store(session_factory, submission_id, sha256, len(data))
    logger.info("fetched %d bytes for %s from %s", len(data), submission_id, url)
    return FetchResult(FetchOutcome.STORED if stored else FetchOutcome.NOOP)
