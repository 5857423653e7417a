"""The ``/v1/submissions`` blueprint: validate, store, commit, enqueue by name, answer 202.

The row (written ``queued``) and the Idempotency-Key record commit together, then the task is sent;
if the broker is down the row goes back to ``received`` and the sweeper enqueues it later.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy.exc import IntegrityError

from moderation.api_schema import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    ListQuery,
    SubmissionList,
)
from moderation.db import session_scope
from moderation.models import MediaKind, Status
from moderation.submissions import (
    InvalidCursor,
    StoredResponse,
    SubmissionView,
    claim_key,
    create_submission,
    find_stored_response,
    get_submission,
    list_submissions,
    mark_received,
    submission_out,
    update_stored_response,
)
from webhook_api.auth import current_tenant, require_tenant
from webhook_api.intake import Intake, parse_submission
from webhook_api.limits import check_rate, tenant_rate_limit
from webhook_api.metrics import ENQUEUE_FAILURES, SUBMISSIONS_ACCEPTED
from webhook_api.problems import ApiProblem, validation_problem
from webhook_api.state import state
from webhook_api.validation import validate
from worker.enqueue import TASK_FETCH, TASK_SCORE, publish

logger = logging.getLogger(__name__)

bp = Blueprint("submissions", __name__, url_prefix="/v1/submissions")


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise validation_problem(
            [
                {
                    "field": "Idempotency-Key",
                    "message": f"expected 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
                    "characters",
                }
            ]
        )
    return key


def _stored(tenant_id: str, key: str | None, fingerprint: str, per_minute: int) -> Response | None:
    """Returns the replay of a stored response to this key, after checking the rate limit (0:
    none) for a new submission, both read in one read-only transaction; None when it is new."""
    if key is None and per_minute <= 0:
        return None
    with session_scope(state().session_factory, read_only=True) as session:
        stored = None
        if key is not None:
            stored = find_stored_response(session=session, tenant_id=tenant_id, key=key)
        if stored is None:
            check_rate(session=session, tenant_id=tenant_id, per_minute=per_minute)
    return None if stored is None else _replay(stored, fingerprint)


def _replay(stored: StoredResponse, fingerprint: str) -> Response:
    if stored.fingerprint != fingerprint:
        raise ApiProblem(
            409,
            "idempotency-conflict",
            "Idempotency-Key reused",
            "this Idempotency-Key was already used with a different request body; "
            "expected the identical body, or a new key",
        )
    return _accepted(stored.body, stored.status, replayed=True)


def _accepted(body: dict[str, Any], status: int, *, replayed: bool = False) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Location"] = url_for("submissions.get_one", submission_id=body["id"])
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _create(intake: Intake, tenant_id: str, key: str | None, fingerprint: str) -> SubmissionView:
    st = state()
    sha256 = None
    if intake.data is not None:
        sha256 = st.blobs.put(intake.data, sha256=intake.sha256)
    # Without an Idempotency-Key the row is the one write (no BEGIN and COMMIT on PostgreSQL).
    with session_scope(st.session_factory, autocommit=key is None) as session:
        view = create_submission(
            session=session,
            tenant_id=tenant_id,
            media_kind=MediaKind.UPLOAD if sha256 else MediaKind.URL,
            blob_sha256=sha256,
            media_url=intake.media_url,
            size_bytes=len(intake.data) if intake.data is not None else None,
            filename=intake.filename,
            content_type=intake.content_type,
            callback_url=intake.callback_url,
            external_id=intake.external_id,
            metadata=intake.metadata,
            queued=True,
        )
        if key is not None:
            claim_key(
                session=session,
                tenant_id=tenant_id,
                key=key,
                fingerprint=fingerprint,
                status=202,
                body=view.to_json(),
                submission_id=view.id,
            )
    return view


def _enqueue(view: SubmissionView) -> bool:
    task = TASK_FETCH if view.media_kind == MediaKind.URL else TASK_SCORE
    try:
        publish(state().celery, task, view.id)
    except Exception:
        ENQUEUE_FAILURES.inc()
        logger.exception(
            "could not enqueue %s for %s; it stays received for the sweeper", task, view.id
        )
        return False
    return True


def _back_to_received(view: SubmissionView, key: str | None) -> dict[str, Any]:
    """Marks a submission whose task could not be published ``received``; returns the 202 body."""
    with session_scope(state().session_factory) as session:
        moved_at = mark_received(session=session, submission_id=view.id)
        if moved_at is not None:
            body = dataclasses.replace(view, status=Status.RECEIVED, updated_at=moved_at).to_json()
        else:  # the sweeper moved it on already: answer with what it is now
            fresh = get_submission(session=session, submission_id=view.id, tenant_id=None)
            body = (fresh or view).to_json()
        if key is not None:
            update_stored_response(
                session=session, tenant_id=view.tenant_id, key=key, submission_id=view.id, body=body
            )
    return body


@bp.post("")
@require_tenant
def create() -> Response:
    """Accepts a submission (multipart ``file``, JSON ``media_url`` or a raw media body) and
    answers 202."""
    st = state()
    tenant = current_tenant()
    key = _idempotency_key()
    intake = parse_submission(request, st.allowlist, st.settings.max_upload_bytes)
    fingerprint = intake.fingerprint() if key is not None else ""
    per_minute = tenant_rate_limit(tenant, st.settings.rate_limit_per_minute)
    if (replayed := _stored(tenant.id, key, fingerprint, per_minute)) is not None:
        return replayed
    try:
        view = _create(intake, tenant.id, key, fingerprint)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key committed first.
        if key is not None and (replayed := _stored(tenant.id, key, fingerprint, 0)) is not None:
            return replayed
        raise
    body = view.to_json()
    if not _enqueue(view):
        try:
            body = _back_to_received(view, key)
        except Exception:
            # Committed already: answer 202; the sweeper re-enqueues a queued row that stays put.
            logger.exception("could not mark %s received; it stays queued for the sweeper", view.id)
    SUBMISSIONS_ACCEPTED.labels(kind=view.media_kind).inc()
    return _accepted(body, 202)


@bp.get("/<submission_id>")
@require_tenant
def get_one(submission_id: str) -> Response:
    """Returns one of the tenant's submissions; another tenant's id is 404."""
    with session_scope(state().session_factory, read_only=True) as session:
        view = get_submission(
            session=session, submission_id=submission_id, tenant_id=current_tenant().id
        )
    if view is None:
        raise ApiProblem(
            404,
            "not-found",
            "Not found",
            f"no submission {submission_id!r} for this API key; "
            "expected an id returned by POST /v1/submissions",
        )
    return jsonify(view.to_json())


def _list_args() -> ListQuery:
    allowed = tuple(ListQuery.model_fields)
    errors = [
        {
            "field": name,
            "message": f"given {len(request.args.getlist(name))} times; expected it once",
        }
        for name in allowed
        if len(request.args.getlist(name)) > 1
    ]
    values: dict[str, Any] = dict(request.args.items())
    if values.get("limit", "").isascii() and values.get("limit", "").isdigit():
        values["limit"] = int(values["limit"])
    return validate(ListQuery, values, allowed, unknown="unknown query parameter", more=errors)


@bp.get("")
@require_tenant
def list_all() -> Response:
    """Returns the tenant's submissions, newest first, with an opaque ``next_cursor``."""
    query = _list_args()
    try:
        with session_scope(state().session_factory, read_only=True) as session:
            page = list_submissions(
                session=session,
                tenant_id=current_tenant().id,
                status=query.status,
                limit=query.limit,
                cursor=query.cursor,
            )
    except InvalidCursor as exc:
        raise validation_problem([{"field": "cursor", "message": str(exc)}]) from exc
    next_url = None
    if page.next_cursor:
        next_url = url_for(
            "submissions.list_all",
            status=query.status,
            limit=query.limit,
            cursor=page.next_cursor,
        )
    listed = SubmissionList(
        items=[submission_out(v) for v in page.items], next_cursor=page.next_cursor, next=next_url
    )
    return jsonify(listed.model_dump(mode="json"))
