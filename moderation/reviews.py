"""Human reviews: the labels a reviewer assigns to a submission, which feed retraining.

A review never changes a verdict the model gave; it records what the reviewer decided so that
``dfmod labels export`` can turn reviewed submissions into training data with provenance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from moderation.api_schema import EVENT_DECIDED
from moderation.models import Review, Status, Submission, utcnow
from moderation.outbox import add_outbox
from moderation.submissions import get_submission

logger = logging.getLogger(__name__)

LABELS = ("real", "fake")


class ReviewError(ValueError):
    """The review cannot be recorded as given; the message says what was expected."""


def add_review(
    session: Session,
    *,
    submission_id: str,
    reviewer: str,
    label: str,
    note: str | None = None,
) -> Review:
    """Records a reviewer's label for a submission; the newest review of a submission wins."""
    label = label.strip().lower()
    if label not in LABELS:
        raise ReviewError(f"label {label!r}; expected one of {', '.join(LABELS)}")
    if not reviewer.strip():
        raise ReviewError("reviewer is empty; expected who made the decision")
    if session.get(Submission, submission_id) is None:
        raise ReviewError(f"no submission {submission_id!r}")
    review = Review(submission_id=submission_id, reviewer=reviewer.strip(), label=label, note=note)
    session.add(review)
    session.flush()
    logger.info("review %s: %s labelled %s by %s", review.id, submission_id, label, reviewer)
    return review


@dataclass(frozen=True)
class Decision:
    """A recorded decision: the review row and the outbox row to deliver (None without a URL)."""

    submission_id: str
    review_id: str
    delivery_id: str | None


def decide(
    session: Session,
    *,
    submission_id: str,
    reviewer: str,
    label: str,
    note: str | None = None,
) -> Decision:
    """Decides a needs_review submission: status ``decided``, a Review and a decided callback.

    Everything happens in the caller's transaction; enqueue the delivery task after commit. The
    status moves with a conditional update, so two reviewers deciding at once cannot both win.
    The item's hash goes into the tenant's bank for the label (unless its policy says not to).
    """
    moved = session.execute(
        update(Submission)
        .where(Submission.id == submission_id, Submission.status == Status.NEEDS_REVIEW)
        .values(status=Status.DECIDED, completed_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise ReviewError(f"submission {submission_id!r} is not waiting for review")
    review = add_review(
        session, submission_id=submission_id, reviewer=reviewer, label=label, note=note or None
    )
    _file_in_bank(session, review)
    session.flush()
    view = get_submission(session=session, submission_id=submission_id, tenant_id=None)
    assert view is not None  # the update above found it
    delivery_id = add_outbox(session, view=view, event_type=EVENT_DECIDED)
    return Decision(submission_id, review.id, delivery_id)


def _file_in_bank(session: Session, review: Review) -> None:
    from moderation.banks import record_decision

    record_decision(
        session=session,
        submission_id=review.submission_id,
        label=review.label,
        reviewer=review.reviewer,
        review_id=review.id,
    )


def reverse(
    session: Session, *, submission_id: str, reviewer: str, label: str, note: str | None = None
) -> Decision:
    """Reverses a decided submission's label: a new Review, and its bank entry moves to the
    tenant's bank for the new label. No second ``submission.decided`` callback is sent."""
    sub = session.get(Submission, submission_id)
    if sub is None or sub.status != Status.DECIDED:
        raise ReviewError(f"submission {submission_id!r} is not decided; expected a decided item")
    latest = session.scalar(
        select(Review.label)
        .where(Review.submission_id == submission_id)
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(1)
    )
    if latest == label.strip().lower():
        raise ReviewError(f"submission {submission_id!r} is already decided {latest}")
    review = add_review(
        session, submission_id=submission_id, reviewer=reviewer, label=label, note=note or None
    )
    _file_in_bank(session, review)
    logger.info("decision on %s reversed to %s by %s", submission_id, review.label, reviewer)
    return Decision(submission_id, review.id, None)
