"""Human reviews: the labels a reviewer assigns to a submission, which feed retraining.

A review never changes a verdict the model gave; it records what the reviewer decided so that
``dfmod labels export`` can turn reviewed submissions into training data with provenance.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from moderation.models import Review, Submission

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
