"""Human reviews: the labels a reviewer assigns to a submission, which feed retraining.

A review never changes a verdict the model gave; it records what the reviewer decided so that
``dfmod labels export`` can turn reviewed submissions into training data with provenance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from moderation.models import Review, Status, Submission, utcnow

logger = logging.getLogger(__name__)

LABELS = ("real", "fake")
EVENT_DECIDED = "submission.decided"


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
    """
    from worker.callbacks import add_outbox

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
    submission = session.get(Submission, submission_id)
    assert submission is not None  # the update above found it
    session.refresh(submission)
    delivery = add_outbox(session, submission=submission, event_type=EVENT_DECIDED)
    return Decision(submission_id, review.id, delivery.id if delivery else None)
