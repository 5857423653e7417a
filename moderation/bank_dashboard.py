"""Read-side queries of the dashboard's bank views: one item with its signals, and the banks page
(sizes, newest entries, newest removals). Kept apart from the Flask views, as
:mod:`moderation.dashboard` is."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.bank_models import BankEntry
from moderation.banks import (
    BankInfo,
    EntryInfo,
    _entry_info,
    list_banks,
    media_hash_of,
    recent_entries,
)
from moderation.mediahash import MediaHash
from moderation.models import Review, Tenant
from moderation.submissions import SubmissionView, get_submission

logger = logging.getLogger(__name__)

REMOVED_SHOWN = 10


@dataclass(frozen=True)
class ItemDetail:
    """One submission as its page shows it."""

    view: SubmissionView
    tenant: str
    media: MediaHash | None
    reviews: list[dict[str, Any]]
    bank_entries: list[tuple[EntryInfo, str]]  # entries this item created, with the bank's name


@dataclass(frozen=True)
class BankPanel:
    """A bank with its newest entries and newest removals."""

    bank: BankInfo
    entries: list[EntryInfo]
    removed: list[EntryInfo]


def item_detail(*, session: Session, submission_id: str) -> ItemDetail | None:
    """Returns a submission with its hash, reviews and the bank entries it created, or None."""
    view = get_submission(session=session, submission_id=submission_id, tenant_id=None)
    if view is None:
        return None
    tenant = session.scalar(select(Tenant.name).where(Tenant.id == view.tenant_id)) or ""
    reviews = [
        {"reviewer": r.reviewer, "label": r.label, "note": r.note, "created_at": r.created_at}
        for r in session.scalars(
            select(Review)
            .where(Review.submission_id == submission_id)
            .order_by(Review.created_at, Review.id)
        )
    ]
    from moderation.bank_models import Bank

    entries = [
        (_entry_info(e), name)
        for e, name in session.execute(
            select(BankEntry, Bank.name)
            .join(Bank, Bank.id == BankEntry.bank_id)
            .where(BankEntry.submission_id == submission_id)
            .order_by(BankEntry.id)
        )
    ]
    media = media_hash_of(session=session, submission_id=submission_id)
    return ItemDetail(view, tenant, media, reviews, entries)


def bank_panels(*, session: Session) -> list[BankPanel]:
    """Returns every bank with its newest entries and removals."""
    return [
        BankPanel(
            bank,
            recent_entries(session=session, bank_id=bank.id),
            recent_entries(session=session, bank_id=bank.id, limit=REMOVED_SHOWN, removed=True),
        )
        for bank in list_banks(session=session)
    ]
