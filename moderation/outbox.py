"""The callback outbox: one row per event, written in the transaction that changed the submission.

The core writes rows (scoring, failures, review decisions); the worker delivers them
(:mod:`worker.callbacks`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session, sessionmaker

from moderation.db import session_scope
from moderation.models import CallbackDelivery, DeliveryStatus, new_id, utcnow
from moderation.submissions import SubmissionView

OUTBOX: Table = CallbackDelivery.__table__  # type: ignore[assignment]


def event_payload(event_type: str, view: SubmissionView) -> dict[str, Any]:
    """Returns the Standard Webhooks payload ``{type, timestamp, data}``; data is the API's view."""
    return {"type": event_type, "timestamp": utcnow().isoformat(), "data": view.to_json()}


def outbox_row(*, view: SubmissionView, event_type: str) -> dict[str, Any] | None:
    """Returns the outbox row of an event (pending, due now) when the submission has a callback
    URL, else None: the column values that :func:`add_outbox` inserts.

    ``view`` is the submission as the payload shows it, in its new state."""
    if not view.callback_url:
        return None
    now = utcnow()
    return {
        "id": new_id("msg"),
        "submission_id": view.id,
        "tenant_id": view.tenant_id,
        "event_type": event_type,
        "url": view.callback_url,
        "payload": event_payload(event_type, view),
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_status_code": None,
        "last_error": None,
        "delivered_at": None,
        "created_at": now,
        "updated_at": now,
    }


def add_outbox(session: Session, *, view: SubmissionView, event_type: str) -> str | None:
    """Inserts the outbox row of an event (:func:`outbox_row`) when the submission has a callback
    URL; returns its id, else None.

    ``view`` is the submission as the payload shows it, in its new state: call this in the
    transaction that wrote that state (one Core INSERT, no unit of work).
    """
    row = outbox_row(view=view, event_type=event_type)
    if row is None:
        return None
    session.execute(insert(OUTBOX), row)
    return str(row["id"])


def replay(*, delivery_id: str, session_factory: sessionmaker[Session]) -> bool:
    """Makes a dead (or delivered) delivery due again for one more attempt; returns False if absent.

    The event keeps its ``webhook-id``, so a receiver that already processed it can deduplicate.
    Callers enqueue the delivery task after this returns (or leave it to the sweeper).
    """
    with session_scope(session_factory) as session:
        row = session.get(CallbackDelivery, delivery_id)
        if row is None:
            return False
        row.status, row.next_attempt_at = DeliveryStatus.PENDING, utcnow()
        return True
