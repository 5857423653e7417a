"""Submission service functions: create, read, list, mark queued, and Idempotency-Key records.

Keyword-only functions taking a ``Session``; callers get :class:`SubmissionView` (built by
:func:`submission_view`), whose :meth:`SubmissionView.to_json` is the API's representation. Lists
are newest first by ``(created_at, id)`` with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session, selectinload

from moderation.api_schema import (
    MAX_PAGE_SIZE,
    BankMatch,
    EnsembleOut,
    Explanation,
    FailureOut,
    MediaOut,
    ModelRef,
    ModelScore,
    ModelSignal,
    Provenance,
    ReviewOut,
    Signals,
    SubmissionOut,
    Thresholds,
    VerdictOut,
    VideoScores,
)
from moderation.models import (
    IdempotencyRecord,
    Review,
    Status,
    Submission,
    Verdict,
    new_id,
    utcnow,
)
from moderation.policy import REASON_MODEL, REASON_PROVENANCE_AI, decide

logger = logging.getLogger(__name__)

_SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]


class InvalidCursor(ValueError):
    """A pagination cursor this service did not issue."""


@dataclass(frozen=True)
class VerdictView:
    """The model's answer, as clients see it."""

    p_fake: float
    logit: float
    decision: str
    model_name: str
    model_version: str
    pass_below: float
    flag_at: float
    created_at: dt.datetime
    frames: dict[str, Any] | None = None  # videos only (see moderation.video)
    decision_reason: str | None = None  # None: "model" (verdicts stored before reasons were)
    provenance: dict[str, Any] | None = None  # the C2PA summary (moderation.provenance)
    explanation: dict[str, Any] | None = None  # Grad-CAM (see moderation.explanation)
    signals: dict[str, Any] | None = None  # the model's own decision and the bank match
    models: list[dict[str, Any]] | None = None  # each detector's own score, where stored
    ensemble: dict[str, Any] | None = None  # how p_fake combined them (moderation.ensemble)


@dataclass(frozen=True)
class ReviewView:
    """The latest human decision on a submission."""

    label: str
    created_at: dt.datetime


@dataclass(frozen=True)
class SubmissionView:
    """One submission at the service boundary (no ORM object escapes)."""

    id: str
    tenant_id: str
    status: str
    media_kind: str
    media_url: str | None
    blob_sha256: str | None
    size_bytes: int | None
    callback_url: str | None
    external_id: str | None
    metadata: dict[str, Any]
    failure_reason: str | None
    failure_detail: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None
    verdict: VerdictView | None
    review: ReviewView | None = None

    def to_json(self) -> dict[str, Any]:
        """Returns the API representation (:class:`~moderation.api_schema.SubmissionOut`)."""
        return submission_out(self).model_dump(mode="json")


def submission_out(view: SubmissionView) -> SubmissionOut:
    """Returns the response model of a submission (validated on the way)."""
    verdict = None
    if view.verdict is not None:
        v = view.verdict
        model_label = "fake" if v.p_fake >= 0.5 else "real"
        reason = v.decision_reason or REASON_MODEL
        match = (v.signals or {}).get("match")
        verdict = VerdictOut(
            p_fake=v.p_fake,
            label="ai_generated" if reason == REASON_PROVENANCE_AI else model_label,  # type: ignore[arg-type]
            decision=v.decision,  # type: ignore[arg-type]
            model=ModelRef(name=v.model_name, version=v.model_version),
            thresholds=Thresholds(pass_below=v.pass_below, flag_at=v.flag_at),
            created_at=v.created_at,
            video=None if v.frames is None else VideoScores.model_validate(v.frames),
            decision_reason=reason,
            signals=Signals(
                model=_model_signal(v, model_label),
                match=None if match is None else BankMatch.model_validate(match),
                provenance=None
                if v.provenance is None
                else Provenance.model_validate(v.provenance),
            ),
            explanation=None
            if v.explanation is None
            else Explanation.model_validate(v.explanation),
            models=None if v.models is None else [ModelScore.model_validate(m) for m in v.models],
            ensemble=None if v.ensemble is None else EnsembleOut.model_validate(v.ensemble),
        )
    failure = None
    if view.failure_reason is not None:
        failure = FailureOut(reason=view.failure_reason, detail=view.failure_detail)
    review = None
    if view.review is not None:
        review = ReviewOut(label=view.review.label, created_at=view.review.created_at)  # type: ignore[arg-type]
    return SubmissionOut(
        id=view.id,
        status=view.status,
        media=MediaOut(
            kind=view.media_kind,  # type: ignore[arg-type]
            url=view.media_url,
            sha256=view.blob_sha256,
            size_bytes=view.size_bytes,
        ),
        callback_url=view.callback_url,
        external_id=view.external_id,
        metadata=view.metadata,
        verdict=verdict,
        review=review,
        failure=failure,
        created_at=view.created_at,
        updated_at=view.updated_at,
        completed_at=view.completed_at,
    )


@dataclass(frozen=True)
class Page:
    """One page of a list and the cursor of the next (None on the last page)."""

    items: list[SubmissionView]
    next_cursor: str | None


@dataclass(frozen=True)
class StoredResponse:
    """The first response given to an Idempotency-Key."""

    fingerprint: str
    status: int
    body: dict[str, Any]
    submission_id: str | None


def _model_signal(v: VerdictView, label: str) -> ModelSignal:
    """Returns what the model alone said: its score, label and the decision of its thresholds."""
    own = decide(v.p_fake, pass_below=v.pass_below, flag_at=v.flag_at)
    return ModelSignal(
        name=v.model_name,
        version=v.model_version,
        p_fake=v.p_fake,
        label=label,  # type: ignore[arg-type]
        decision=own,  # type: ignore[arg-type]
    )


# The columns a view shows: a SubmissionView's fields are its row's columns by name, as are a
# VerdictView's. VIEW_COLUMNS is what a caller that builds a view from a Core row selects.
VIEW_COLUMNS = tuple(f.name for f in fields(SubmissionView) if f.name not in ("verdict", "review"))
_VERDICT_COLUMNS = tuple(f.name for f in fields(VerdictView))


# Each ORM class's attribute name of a column, by column name (``Submission.meta`` is
# ``metadata``).
_ATTRIBUTES: dict[type[Any], dict[str, str]] = {
    cls: {column.name: prop.key for prop in cls.__mapper__.column_attrs for column in prop.columns}
    for cls in (Submission, Verdict)
}


def _columns(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Returns the named column values of a Core mapping or an ORM row (read by attribute)."""
    if isinstance(row, Mapping):
        return {name: row[name] for name in names}
    attributes = _ATTRIBUTES[type(row)]
    return {name: getattr(row, attributes[name]) for name in names}


def submission_view(
    submission: Submission | Mapping[Any, Any],
    *,
    verdict: Verdict | Mapping[Any, Any] | None = None,
    reviews: Sequence[Review] = (),
) -> SubmissionView:
    """Returns the view of a submission, the one way every caller builds it.

    ``submission`` and ``verdict`` are ORM rows or their tables' column values (a Core row's
    ``_mapping``, the dict a Core INSERT wrote: ``metadata`` is the column's name); the newest
    of ``reviews`` (oldest first, as ``Submission.reviews`` orders them) is shown. Nothing is
    loaded: a scorer passes the verdict it just wrote and no reviews (one cannot exist yet)."""
    values = _columns(submission, VIEW_COLUMNS)
    values["metadata"] = dict(values["metadata"] or {})
    latest = reviews[-1] if reviews else None
    return SubmissionView(
        **values,
        verdict=None if verdict is None else VerdictView(**_columns(verdict, _VERDICT_COLUMNS)),
        review=None if latest is None else ReviewView(latest.label, latest.created_at),
    )


def create_submission(
    *,
    session: Session,
    tenant_id: str,
    media_kind: str,
    blob_sha256: str | None = None,
    media_url: str | None = None,
    size_bytes: int | None = None,
    filename: str | None = None,
    content_type: str | None = None,
    callback_url: str | None = None,
    external_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    queued: bool = False,
) -> SubmissionView:
    """Returns a new submission (inserted; the caller's transaction commits it): ``received``, or
    ``queued`` when the caller will publish its task right after the commit (and calls
    :func:`mark_received` if that fails).

    One Core INSERT of the row the ORM would write (the API's hottest write: no unit of work and
    no loading of the verdict and reviews a new submission cannot have yet)."""
    if (blob_sha256 is None) == (media_url is None):
        raise ValueError("expected exactly one of blob_sha256 (upload) or media_url")
    now = utcnow()
    row = {
        "id": new_id("sub"),
        "tenant_id": tenant_id,
        "status": Status.QUEUED if queued else Status.RECEIVED,
        "media_kind": media_kind,
        "media_url": media_url,
        "blob_sha256": blob_sha256,
        "filename": filename,
        "content_type": content_type,
        "size_bytes": size_bytes,
        "callback_url": callback_url,
        "external_id": external_id,
        "metadata": dict(metadata or {}),
        "failure_reason": None,
        "failure_detail": None,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "queued_at": now if queued else None,
        "completed_at": None,
    }
    session.execute(insert(_SUBMISSIONS), row)
    view = submission_view(row)
    logger.info("submission %s received for tenant %s (%s)", view.id, tenant_id, media_kind)
    return view


def get_submission(
    *, session: Session, submission_id: str, tenant_id: str | None
) -> SubmissionView | None:
    """Returns the submission, or None when absent or owned by another tenant.

    ``tenant_id=None`` skips the ownership check (workers and the review dashboard).
    """
    query = select(Submission).options(
        selectinload(Submission.verdict), selectinload(Submission.reviews)
    )
    query = query.where(Submission.id == submission_id)
    if tenant_id is not None:
        query = query.where(Submission.tenant_id == tenant_id)
    row = session.scalar(query)
    return None if row is None else submission_view(row, verdict=row.verdict, reviews=row.reviews)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_LAST_MICROSECONDS = (dt.datetime.max.replace(tzinfo=dt.timezone.utc) - _EPOCH) // dt.timedelta(
    microseconds=1
)


def encode_cursor(created_at: dt.datetime, submission_id: str) -> str:
    """Returns an opaque cursor pointing just after ``(created_at, id)``: the time in
    microseconds since the epoch, a dot, the id (``CURSOR_PATTERN`` in moderation.api_schema)."""
    micros = (created_at.astimezone(dt.timezone.utc) - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}.{submission_id}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """Returns ``(created_at, id)`` from a cursor; raises :class:`InvalidCursor`.

    Any cursor the pattern allows is accepted (a time past the calendar's end reads as its end);
    the base64 cursors of earlier versions still decode."""
    micros, dot, submission_id = cursor.partition(".")
    if dot and micros.isascii() and micros.isdigit() and submission_id:
        offset = dt.timedelta(microseconds=min(int(micros), _LAST_MICROSECONDS))
        return _EPOCH + offset, submission_id
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, submission_id = json.loads(raw)
        created_at = dt.datetime.fromisoformat(stamp)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor("expected a cursor taken from a previous page's next_cursor") from exc
    if created_at.tzinfo is None or not isinstance(submission_id, str):
        raise InvalidCursor("expected a cursor taken from a previous page's next_cursor")
    return created_at, submission_id


def list_submissions(
    *,
    session: Session,
    tenant_id: str,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Returns one page of the tenant's submissions, newest first."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"expected limit between 1 and {MAX_PAGE_SIZE}, got {limit}")
    query = select(Submission).options(
        selectinload(Submission.verdict), selectinload(Submission.reviews)
    )
    query = query.where(Submission.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Submission.status == status)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Submission.created_at < created_at,
                and_(Submission.created_at == created_at, Submission.id < last_id),
            )
        )
    query = query.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    views = [submission_view(r, verdict=r.verdict, reviews=r.reviews) for r in rows]
    return Page(views, next_cursor)


def mark_received(*, session: Session, submission_id: str) -> dt.datetime | None:
    """Moves a ``queued`` submission back to ``received`` (its task could not be published);
    returns when, or None if it had moved on."""
    now = utcnow()
    result = session.execute(
        update(Submission)
        .where(Submission.id == submission_id, Submission.status == Status.QUEUED)
        .values(status=Status.RECEIVED, queued_at=None, updated_at=now)
    )
    return now if getattr(result, "rowcount", 0) else None


def count_by_status(*, session: Session) -> dict[str, int]:
    """Returns the number of submissions in each status (every status present, zero included)."""
    counts = dict.fromkeys(Status.ALL, 0)
    rows = session.execute(select(Submission.status, func.count()).group_by(Submission.status))
    for status, count in rows:
        counts[status] = int(count)
    return counts


def find_stored_response(*, session: Session, tenant_id: str, key: str) -> StoredResponse | None:
    """Returns the first response recorded for a tenant's Idempotency-Key, or None."""
    row = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == key
        )
    )
    if row is None:
        return None
    return StoredResponse(
        row.fingerprint, row.response_status, row.response_body, row.submission_id
    )


def claim_key(
    *,
    session: Session,
    tenant_id: str,
    key: str,
    fingerprint: str,
    status: int,
    body: dict[str, Any],
    submission_id: str,
) -> None:
    """Records the first response to an Idempotency-Key, in the submission's own transaction.

    Insert only: a concurrent duplicate fails on the unique ``(tenant_id, key)`` constraint
    (``IntegrityError``) instead of creating a second submission or taking the key over.
    """
    session.add(
        IdempotencyRecord(
            tenant_id=tenant_id,
            key=key,
            fingerprint=fingerprint,
            response_status=status,
            response_body=body,
            submission_id=submission_id,
        )
    )
    session.flush()


def update_stored_response(
    *, session: Session, tenant_id: str, key: str, submission_id: str, body: dict[str, Any]
) -> None:
    """Refreshes the stored body of a key this submission claimed (e.g. once it is queued)."""
    session.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.tenant_id == tenant_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.submission_id == submission_id,
        )
        .values(response_body=body)
    )
