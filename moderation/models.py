"""SQLAlchemy 2.0 models: the one schema every dfmod process reads and writes.

Tenants, submissions, one verdict per submission (unique), the callback outbox, reviews, model
versions and Idempotency-Key responses; prefixed random ids, timezone-aware UTC, portable JSON.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

logger = logging.getLogger(__name__)

# Deterministic constraint names keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Status:
    """Submission status strings (the lifecycle in docs/design.md)."""

    RECEIVED = "received"
    QUEUED = "queued"
    FETCHING = "fetching"
    SCORING = "scoring"
    SCORED = "scored"
    AUTO_PASSED = "auto_passed"
    AUTO_FLAGGED = "auto_flagged"
    NEEDS_REVIEW = "needs_review"
    DECIDED = "decided"
    FAILED = "failed"

    ALL = (
        RECEIVED,
        QUEUED,
        FETCHING,
        SCORING,
        SCORED,
        AUTO_PASSED,
        AUTO_FLAGGED,
        NEEDS_REVIEW,
        DECIDED,
        FAILED,
    )
    # Statuses a worker still has to move on; the sweeper watches these.
    IN_FLIGHT = (RECEIVED, QUEUED, FETCHING, SCORING, SCORED)
    # Statuses the automatic pipeline ends in (needs_review waits for a human).
    FINAL = (AUTO_PASSED, AUTO_FLAGGED, DECIDED, FAILED)


class FailureReason:
    """Machine-readable ``failure_reason`` codes of failed submissions."""

    UNSUPPORTED_MEDIA = "unsupported_media"
    UNREADABLE_MEDIA = "unreadable_media"
    TOO_LARGE = "too_large"
    FETCH_FAILED = "fetch_failed"
    INFERENCE_UNAVAILABLE = "inference_unavailable"
    INTERNAL_ERROR = "internal_error"


class DeliveryStatus:
    """Outbox row status strings."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class MediaKind:
    """Where a submission's bytes come from."""

    UPLOAD = "upload"
    URL = "url"


def utcnow() -> dt.datetime:
    """Returns the current time as a timezone-aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def new_id(prefix: str) -> str:
    """Returns a random id such as ``sub_3f2c...`` (prefix + 32 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex}"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got naive {value!r}")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base with the naming convention and portable JSON/datetime types."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, dt.datetime: UTCDateTime}


class Tenant(Base):
    """A platform using the service: its hashed API key, webhook secret and thresholds."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    api_key_prefix: Mapped[str] = mapped_column(String(32), unique=True)
    api_key_hash: Mapped[str] = mapped_column(String(64))
    # Needed in clear to sign callbacks; never logged or returned after creation.
    webhook_secret: Mapped[str] = mapped_column(String(100))
    # After 'dfmod tenant rotate-secret': the old secret also signs callbacks until it expires.
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(100), default=None)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Per-tenant policy overrides; None means "use the model version's metadata".
    pass_below: Mapped[float | None] = mapped_column(Float, default=None)
    flag_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Submissions per minute; None: the global DFMOD_RATE_LIMIT_PER_MINUTE, 0: unlimited.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    # Which C2PA AI-generation claims flag an item (moderation.policy); None: the global default.
    provenance_policy: Mapped[str | None] = mapped_column(String(20), default=None)
    # The models that score this tenant's items (dfmod tenant set-models); None: DFMOD_MODELS.
    models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Submission(Base):
    """One piece of media a tenant asked us to moderate, and where it is in its lifecycle."""

    __tablename__ = "submissions"
    __table_args__ = (
        Index("ix_submissions_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_submissions_tenant_status_created", "tenant_id", "status", "created_at", "id"),
        Index("ix_submissions_status_updated", "status", "updated_at"),
        Index("ix_submissions_lease_expires", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sub"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=Status.RECEIVED)
    media_kind: Mapped[str] = mapped_column(String(10))
    media_url: Mapped[str | None] = mapped_column(Text, default=None)
    blob_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    filename: Mapped[str | None] = mapped_column(String(255), default=None)
    content_type: Mapped[str | None] = mapped_column(String(100), default=None)
    size_bytes: Mapped[int | None] = mapped_column(Integer, default=None)
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    # "metadata" is reserved by SQLAlchemy's declarative base, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    failure_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    failure_detail: Mapped[str | None] = mapped_column(Text, default=None)
    # How many times a task picked this submission up (the sweeper gives up after a limit).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The worker holding this job (worker.leases) and until when, unless its heartbeat renews it;
    # a lapsed lease is re-enqueued. NULL owner with a time: a retry due by then.
    lease_owner: Mapped[str | None] = mapped_column(String(120), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    queued_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    completed_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    tenant: Mapped[Tenant] = relationship()
    verdict: Mapped[Verdict | None] = relationship(back_populates="submission", uselist=False)
    reviews: Mapped[list[Review]] = relationship(order_by="Review.created_at", viewonly=True)


class Verdict(Base):
    """The model's answer for one submission; unique per submission so re-runs are no-ops."""

    __tablename__ = "verdicts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ver"))
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )
    logit: Mapped[float] = mapped_column(Float)
    p_fake: Mapped[float] = mapped_column(Float)
    # The policy outcome: auto_passed, auto_flagged or needs_review.
    decision: Mapped[str] = mapped_column(String(20))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(40))
    temperature: Mapped[float] = mapped_column(Float, default=1.0)
    pass_below: Mapped[float] = mapped_column(Float)
    flag_at: Mapped[float] = mapped_column(Float)
    # Videos only: sampled frames' scores and the aggregation (moderation.video); None for images.
    frames: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # What decided ``decision`` ("model", "bank_match:fake", "provenance:ai_generated" …);
    # None on verdicts older than the field: the model.
    decision_reason: Mapped[str | None] = mapped_column(String(60), default=None)
    # The C2PA manifest's summary (moderation.provenance); None when the file carries none.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Grad-CAM map and top regions (moderation.explanation); None when the model gave no map.
    explanation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The model's own decision and the bank match: {"model": {...}, "match": {...} | None}.
    signals: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Each enabled model's result [{name, version, p_fake, latency_ms[, error]}] and how p_fake
    # combined them (moderation.ensemble); None on rows stored before several models were.
    models: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    ensemble: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    submission: Mapped[Submission] = relationship(back_populates="verdict")


class CallbackDelivery(Base):
    """Outbox row: one event for a tenant's callback URL; ``id`` is the constant webhook-id."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        UniqueConstraint("submission_id", "event_type"),
        Index("ix_callback_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("msg"))
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(60))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Review(Base):
    """A human reviewer's decision on a submission (the label that feeds retraining)."""

    __tablename__ = "reviews"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rev"))
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    reviewer: Mapped[str] = mapped_column(String(200))
    # "fake" or "real": the ground-truth label the reviewer assigns.
    label: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """A model version published to the Triton repository, and whether it is live."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mv"))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(40))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deployed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    deployed_by: Mapped[str | None] = mapped_column(String(200), default=None)
    live: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    """The first response to an ``Idempotency-Key``, replayed when the same key comes again."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("idk"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 over method, path and body: the same key with another body is a conflict.
    fingerprint: Mapped[str] = mapped_column(String(64))
    submission_id: Mapped[str | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), default=None
    )
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Reviewer(Base):
    """A dashboard account (created by ``dfmod reviewer create``); only a password hash is kept."""

    __tablename__ = "reviewers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# Known-media banks live in their own module; imported here so Base.metadata holds every table.
from moderation import bank_models  # noqa: E402, F401
