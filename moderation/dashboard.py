"""Read-side queries of the review dashboard: the queue, the audit trail and the overview figures.

Kept apart from the Flask views so they can be tested on a plain session and stay small.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation.models import (
    CallbackDelivery,
    DeliveryStatus,
    ModelVersion,
    Review,
    Status,
    Submission,
    Tenant,
    Verdict,
    utcnow,
)

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 100
# Statuses the queue can list (those with a verdict); only needs_review items can be decided.
QUEUE_STATUSES = (Status.NEEDS_REVIEW, Status.AUTO_FLAGGED, Status.AUTO_PASSED, Status.DECIDED)
AUDIT_LIMIT = 200
# Score bands of the queue filter: name -> [low, high) of the calibrated p_fake.
SCORE_BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 0.4),
    "mid": (0.4, 0.6),
    "high": (0.6, 1.01),
}


@dataclass(frozen=True)
class QueueItem:
    """One scored submission as the queue shows it."""

    id: str
    tenant: str
    created_at: dt.datetime
    p_fake: float
    model_version: str
    has_media: bool
    status: str
    video: dict[str, Any] | None = None  # videos: the verdict's per-frame scores (strip)
    decision_reason: str = "model"
    provenance: dict[str, Any] | None = None  # the C2PA summary (moderation.provenance)
    explanation: dict[str, Any] | None = None  # the stored Grad-CAM map and regions

    @property
    def heatmap_missing(self) -> str | None:
        """Returns why no Grad-CAM overlay can be drawn from a stored map (None: it can)."""
        if self.explanation and self.explanation.get("cam"):
            return None
        return (
            f"No Grad-CAM map stored with this verdict (model version {self.model_version}; "
            "versions exported before the cam output give none)."
        )

    def frame_heatmap_missing(self, index: int) -> str | None:
        """Returns why a video frame has no stored map (None: it has one)."""
        frames = (self.explanation or {}).get("frames") or []
        if 0 <= index < len(frames) and frames[index].get("cam"):
            return None
        return f"No Grad-CAM map stored for this frame (model version {self.model_version})."

    match: dict[str, Any] | None = None  # the bank match (verdict.signals.match), if any


def queue_items(
    *,
    session: Session,
    tenant_id: str | None = None,
    band: str | None = None,
    model_version: str | None = None,
    status: str = Status.NEEDS_REVIEW,
    limit: int = QUEUE_LIMIT,
) -> list[QueueItem]:
    """Returns submissions in ``status`` (needs_review by default), oldest first, filtered."""
    if status not in QUEUE_STATUSES:
        raise ValueError(f"status {status!r}; expected one of {', '.join(QUEUE_STATUSES)}")
    query = (
        select(Submission, Verdict, Tenant.name)
        .join(Verdict, Verdict.submission_id == Submission.id)
        .join(Tenant, Tenant.id == Submission.tenant_id)
        .where(Submission.status == status)
    )
    if tenant_id:
        query = query.where(Submission.tenant_id == tenant_id)
    if band in SCORE_BANDS:
        low, high = SCORE_BANDS[band]
        query = query.where(Verdict.p_fake >= low, Verdict.p_fake < high)
    if model_version:
        query = query.where(Verdict.model_version == model_version)
    rows = session.execute(query.order_by(Submission.created_at, Submission.id).limit(limit))
    return [
        QueueItem(
            sub.id,
            name,
            sub.created_at,
            ver.p_fake,
            ver.model_version,
            bool(sub.blob_sha256),
            sub.status,
            ver.frames,
            ver.decision_reason or "model",
            ver.provenance,
            ver.explanation,
            (ver.signals or {}).get("match"),
        )
        for sub, ver, name in rows
    ]


def filter_choices(*, session: Session) -> dict[str, list[Any]]:
    """Returns the tenants and model versions the queue filters offer."""
    tenants = session.execute(select(Tenant.id, Tenant.name).order_by(Tenant.name)).all()
    versions = session.scalars(select(Verdict.model_version).distinct()).all()
    return {"tenants": [tuple(t) for t in tenants], "versions": sorted(versions)}


def audit_rows(*, session: Session, limit: int = AUDIT_LIMIT) -> list[dict[str, Any]]:
    """Returns the newest decisions with reviewer, time, label, note and the model's score."""
    rows = session.execute(
        select(Review, Verdict.p_fake, Verdict.decision)
        .outerjoin(Verdict, Verdict.submission_id == Review.submission_id)
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(limit)
    )
    return [
        {
            "submission_id": r.submission_id,
            "reviewer": r.reviewer,
            "label": r.label,
            "note": r.note,
            "created_at": r.created_at,
            "p_fake": p_fake,
        }
        for r, p_fake, _decision in rows
    ]


def _agreement(session: Session) -> dict[str, Any]:
    rows = session.execute(
        select(Review.label, Verdict.p_fake).join(
            Verdict, Verdict.submission_id == Review.submission_id
        )
    ).all()
    agree = sum(1 for label, p in rows if (p >= 0.5) == (label == "fake"))
    return {"reviewed": len(rows), "agree": agree, "rate": agree / len(rows) if rows else None}


def overview(*, session: Session) -> dict[str, Any]:
    """Returns counts by status, throughput, model-reviewer agreement, dead callbacks, versions."""
    counts = dict(
        session.execute(select(Submission.status, func.count()).group_by(Submission.status)).all()
    )
    now = utcnow()
    throughput = {}
    for label, span in (("hour", dt.timedelta(hours=1)), ("day", dt.timedelta(days=1))):
        since = now - span
        throughput[label] = {
            "completed": session.scalar(
                select(func.count()).where(Submission.completed_at >= since)
            ),
            "reviewed": session.scalar(select(func.count()).where(Review.created_at >= since)),
        }
    dead = session.scalars(
        select(CallbackDelivery)
        .where(CallbackDelivery.status == DeliveryStatus.DEAD)
        .order_by(CallbackDelivery.updated_at.desc())
        .limit(AUDIT_LIMIT)
    ).all()
    versions = session.scalars(
        select(ModelVersion).order_by(ModelVersion.name, ModelVersion.created_at.desc())
    ).all()
    return {
        "counts": {status: int(counts.get(status, 0)) for status in Status.ALL},
        "throughput": throughput,
        "agreement": _agreement(session),
        "dead": list(dead),
        "versions": list(versions),
    }
