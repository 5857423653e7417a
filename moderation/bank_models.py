"""SQLAlchemy models of known-media banks: banks, entries, each submission's hashes, the per-tenant
bank policy and the generation counter that keeps every process's index in step.

Entries are never deleted (a removal is stamped); every bank write bumps the generation first.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from moderation.models import Base, new_id, utcnow

logger = logging.getLogger(__name__)


class BankVerdict:
    """What a bank's entries stand for."""

    FAKE = "fake"
    REAL = "real"
    ALL = (FAKE, REAL)


class EntrySource:
    """Where a bank entry came from."""

    REVIEW = "review"
    IMPORT = "import"
    FILE = "file"  # hashed by 'dfmod bank add'


class BankState(Base):
    """One row: the generation of the bank data (bumped by every change)."""

    __tablename__ = "bank_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class Bank(Base):
    """A named set of hashes standing for one verdict, of one tenant or shared (tenant None)."""

    __tablename__ = "banks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("bnk"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    verdict: Mapped[str] = mapped_column(String(10))
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), default=None, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BankEntry(Base):
    """One hash in a bank, with its origin; removal is a stamp, not a delete."""

    __tablename__ = "bank_entries"
    __table_args__ = (
        Index("ix_bank_entries_bank_created", "bank_id", "created_at"),
        Index("ix_bank_entries_added_generation", "added_generation"),
        Index("ix_bank_entries_removed_generation", "removed_generation"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bank_id: Mapped[str] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"))
    signal_type: Mapped[str] = mapped_column(String(10))  # "pdq" or "vpdq"
    # PDQ hex; for a video its first frame's (the frames are in ``frames``).
    pdq: Mapped[str] = mapped_column(String(64))
    quality: Mapped[int | None] = mapped_column(Integer, default=None)
    frames: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    source: Mapped[str] = mapped_column(String(20))
    submission_id: Mapped[str | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="SET NULL"), default=None, index=True
    )
    review_id: Mapped[str | None] = mapped_column(String(40), default=None)
    added_by: Mapped[str | None] = mapped_column(String(200), default=None)
    # Imports: the file or source named at import time; its own id for the entry, if any.
    import_source: Mapped[str | None] = mapped_column(Text, default=None)
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    added_generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    removed_generation: Mapped[int | None] = mapped_column(Integer, default=None)
    removed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    removed_by: Mapped[str | None] = mapped_column(String(200), default=None)
    removed_reason: Mapped[str | None] = mapped_column(Text, default=None)


class MediaHashRow(Base):
    """A scored submission's perceptual hash: PDQ for images, per-second PDQ for videos."""

    __tablename__ = "media_hashes"

    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    signal_type: Mapped[str] = mapped_column(String(10))
    pdq: Mapped[str] = mapped_column(String(64), index=True)
    quality: Mapped[int] = mapped_column(Integer)
    frames: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BankPolicy(Base):
    """A tenant's bank policy; without a row the defaults of :mod:`moderation.signal_policy`."""

    __tablename__ = "bank_policies"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    on_fake: Mapped[str] = mapped_column(String(10))  # flag | review | ignore
    on_real: Mapped[str] = mapped_column(String(10))  # pass | review | ignore
    auto_add: Mapped[bool] = mapped_column(Boolean, default=True)
