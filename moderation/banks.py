"""Bank service functions: banks, entries, the per-tenant policy, and what a review decision does
to the tenant's banks.

Keyword-only functions taking a ``Session``; every write bumps the bank generation first
(:func:`bump_generation`). CSV import and export are in :mod:`moderation.bank_csv`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moderation.bank_models import (
    Bank,
    BankEntry,
    BankPolicy,
    BankState,
    BankVerdict,
    EntrySource,
    MediaHashRow,
)
from moderation.mediahash import PDQ, MediaHash, PdqHash
from moderation.models import Submission, Tenant, utcnow

logger = logging.getLogger(__name__)

ON_FAKE = ("flag", "review", "ignore")
ON_REAL = ("pass", "review", "ignore")
RECENT_LIMIT = 20
MAX_NAME_CHARS = 200


class BankError(ValueError):
    """A bank operation that cannot be done as asked; the message says what was expected."""


@dataclass(frozen=True)
class BankInfo:
    """A bank and its number of active entries."""

    id: str
    name: str
    verdict: str
    tenant_id: str | None
    tenant_name: str | None
    size: int
    created_at: dt.datetime


@dataclass(frozen=True)
class EntryInfo:
    """One bank entry with its origin (and its removal, if removed)."""

    id: int
    bank_id: str
    signal_type: str
    pdq: str
    quality: int | None
    source: str
    submission_id: str | None
    review_id: str | None
    added_by: str | None
    import_source: str | None
    external_id: str | None
    note: str | None
    created_at: dt.datetime
    removed_at: dt.datetime | None = None
    removed_by: str | None = None
    removed_reason: str | None = None

    def origin(self) -> dict[str, Any]:
        """Returns where the entry came from, as the verdict's ``signals.match.origin`` says."""
        if self.source == EntrySource.REVIEW:
            return {
                "source": self.source,
                "submission": self.submission_id,
                "review": self.review_id,
                "reviewer": self.added_by,
            }
        return {
            "source": self.source,
            "import_source": self.import_source,
            "external_id": self.external_id,
            "added_by": self.added_by,
        }


@dataclass(frozen=True)
class Policy:
    """A tenant's bank policy: what a fake or real match does, and whether reviews add hashes."""

    on_fake: str = "flag"
    on_real: str = "pass"
    auto_add: bool = True


DEFAULT_POLICY = Policy()


def bump_generation(session: Session) -> int:
    """Returns the new bank generation after adding one (call first in a bank write: the row
    lock orders concurrent bank writers)."""
    row = session.execute(
        update(BankState)
        .where(BankState.id == 1)
        .values(generation=BankState.generation + 1)
        .returning(BankState.generation)
        .execution_options(synchronize_session=False)
    ).first()
    if row is not None:
        return int(row[0])
    session.execute(insert(BankState), {"id": 1, "generation": 1})
    return 1


def current_generation(session: Session) -> int:
    """Returns the bank generation (0 before any bank exists)."""
    return int(session.scalar(select(BankState.generation).where(BankState.id == 1)) or 0)


def _entry_info(row: BankEntry) -> EntryInfo:
    return EntryInfo(
        row.id,
        row.bank_id,
        row.signal_type,
        row.pdq,
        row.quality,
        row.source,
        row.submission_id,
        row.review_id,
        row.added_by,
        row.import_source,
        row.external_id,
        row.note,
        row.created_at,
        row.removed_at,
        row.removed_by,
        row.removed_reason,
    )


def _check_verdict(verdict: str) -> str:
    value = verdict.strip().lower()
    if value not in BankVerdict.ALL:
        raise BankError(f"verdict {verdict!r}; expected one of {', '.join(BankVerdict.ALL)}")
    return value


def _tenant_id(session: Session, tenant: str | None) -> str | None:
    if tenant is None:
        return None
    found = session.scalar(select(Tenant.id).where((Tenant.name == tenant) | (Tenant.id == tenant)))
    if found is None:
        raise BankError(f"no tenant {tenant!r}; expected a name from 'dfmod tenant list'")
    return str(found)


def create_bank(
    *, session: Session, name: str, verdict: str, tenant: str | None = None
) -> BankInfo:
    """Returns a new empty bank; ``tenant`` (name or id) None makes it shared by all tenants."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise BankError(f"bank name {name!r}; expected 1 to {MAX_NAME_CHARS} characters")
    tenant_id = _tenant_id(session, tenant)
    bump_generation(session)
    bank = Bank(name=name, verdict=_check_verdict(verdict), tenant_id=tenant_id)
    session.add(bank)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise BankError(f"a bank named {name!r} exists already; expected a new name") from exc
    logger.info("bank %s (%s) created for %s", name, bank.verdict, tenant or "all tenants")
    return get_bank(session=session, name=name)


def _bank_query() -> Any:
    size = (
        select(func.count(BankEntry.id))
        .where(BankEntry.bank_id == Bank.id, BankEntry.removed_at.is_(None))
        .scalar_subquery()
    )
    return select(Bank, Tenant.name, size).outerjoin(Tenant, Tenant.id == Bank.tenant_id)


def _bank_info(bank: Bank, tenant_name: str | None, size: int) -> BankInfo:
    return BankInfo(
        bank.id, bank.name, bank.verdict, bank.tenant_id, tenant_name, int(size), bank.created_at
    )


def get_bank(*, session: Session, name: str) -> BankInfo:
    """Returns the bank called ``name`` (or with that id); raises :class:`BankError`."""
    row = session.execute(_bank_query().where((Bank.name == name) | (Bank.id == name))).first()
    if row is None:
        known = ", ".join(session.scalars(select(Bank.name).order_by(Bank.name)).all()) or "none"
        raise BankError(f"no bank {name!r}; expected one of: {known}")
    return _bank_info(*row)


def list_banks(*, session: Session) -> list[BankInfo]:
    """Returns every bank with its size, by name."""
    return [_bank_info(*row) for row in session.execute(_bank_query().order_by(Bank.name))]


def add_entry(
    *,
    session: Session,
    bank_id: str,
    media: MediaHash | PdqHash,
    source: str,
    generation: int | None = None,
    **origin: Any,
) -> int:
    """Returns the id of a new entry (``origin``: submission_id, review_id, added_by,
    import_source, external_id, note); bumps the generation unless the caller already did."""
    if generation is None:
        generation = bump_generation(session)
    if isinstance(media, PdqHash):
        media = MediaHash(PDQ, media)
    assert media.pdq is not None
    values = {
        "bank_id": bank_id,
        "signal_type": media.signal_type,
        "pdq": media.pdq.hex,
        "quality": media.pdq.quality,
        "frames": media.frames_json(),
        "source": source,
        "added_generation": generation,
        "created_at": utcnow(),
        **origin,
    }
    result = session.execute(insert(BankEntry).returning(BankEntry.id), values)
    return int(result.scalar_one())


def remove_entry(*, session: Session, entry_id: int, by: str, reason: str) -> EntryInfo:
    """Removes an active entry (who, when and why are kept); returns it. Raises BankError."""
    if not by.strip():
        raise BankError("who removes the entry is empty; expected a name")
    generation = bump_generation(session)
    moved = session.execute(
        update(BankEntry)
        .where(BankEntry.id == entry_id, BankEntry.removed_at.is_(None))
        .values(
            removed_at=utcnow(),
            removed_by=by.strip(),
            removed_reason=reason.strip() or None,
            removed_generation=generation,
        )
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise BankError(f"no active bank entry {entry_id}")
    row = session.get(BankEntry, entry_id)
    assert row is not None
    session.refresh(row)
    logger.info("bank entry %s removed by %s: %s", entry_id, by, reason)
    return _entry_info(row)


def recent_entries(
    *, session: Session, bank_id: str, limit: int = RECENT_LIMIT, removed: bool = False
) -> list[EntryInfo]:
    """Returns the bank's newest active entries (``removed``: the newest removed ones)."""
    query = select(BankEntry).where(BankEntry.bank_id == bank_id)
    if removed:
        query = query.where(BankEntry.removed_at.is_not(None))
        query = query.order_by(BankEntry.removed_at.desc())
    else:
        query = query.where(BankEntry.removed_at.is_(None))
        query = query.order_by(BankEntry.created_at.desc(), BankEntry.id.desc())
    return [_entry_info(r) for r in session.scalars(query.limit(limit))]


def get_entry(*, session: Session, entry_id: int) -> EntryInfo | None:
    """Returns one entry (active or removed), or None."""
    row = session.get(BankEntry, entry_id)
    return None if row is None else _entry_info(row)


def get_policy(*, session: Session, tenant_id: str) -> Policy:
    """Returns the tenant's bank policy (the defaults without a row)."""
    row = session.get(BankPolicy, tenant_id)
    return DEFAULT_POLICY if row is None else Policy(row.on_fake, row.on_real, row.auto_add)


def set_policy(
    *,
    session: Session,
    tenant: str,
    on_fake: str | None = None,
    on_real: str | None = None,
    auto_add: bool | None = None,
) -> Policy:
    """Returns the tenant's policy after changing the given parts; raises :class:`BankError`."""
    tenant_id = _tenant_id(session, tenant)
    assert tenant_id is not None
    if on_fake is not None and on_fake not in ON_FAKE:
        raise BankError(f"on_fake {on_fake!r}; expected one of {', '.join(ON_FAKE)}")
    if on_real is not None and on_real not in ON_REAL:
        raise BankError(f"on_real {on_real!r}; expected one of {', '.join(ON_REAL)}")
    old = get_policy(session=session, tenant_id=tenant_id)
    new = Policy(
        on_fake if on_fake is not None else old.on_fake,
        on_real if on_real is not None else old.on_real,
        auto_add if auto_add is not None else old.auto_add,
    )
    row = session.get(BankPolicy, tenant_id) or BankPolicy(tenant_id=tenant_id)
    row.on_fake, row.on_real, row.auto_add = new.on_fake, new.on_real, new.auto_add
    session.add(row)
    session.flush()
    logger.info("bank policy of %s: %s", tenant, new)
    return new


def media_hash_of(*, session: Session, submission_id: str) -> MediaHash | None:
    """Returns the perceptual hash the worker stored for a submission, or None."""
    from moderation.mediahash import FrameHash

    row = session.get(MediaHashRow, submission_id)
    if row is None:
        return None
    frames = tuple(
        FrameHash(float(f["t"]), PdqHash(f["pdq"], int(f["quality"]))) for f in row.frames or ()
    )
    return MediaHash(row.signal_type, PdqHash(row.pdq, row.quality), frames)


def _tenant_bank(session: Session, tenant_id: str, verdict: str) -> str:
    """Returns the id of the tenant's oldest ``verdict`` bank, creating ``<tenant>-<verdict>``."""
    found = session.scalar(
        select(Bank.id)
        .where(Bank.tenant_id == tenant_id, Bank.verdict == verdict)
        .order_by(Bank.created_at, Bank.id)
        .limit(1)
    )
    if found is not None:
        return str(found)
    tenant_name = session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))
    name = f"{tenant_name}-{verdict}"
    if session.scalar(select(Bank.id).where(Bank.name == name)) is not None:
        name = f"{name}-{tenant_id}"  # the plain name is another bank's (shared or renamed)
    return create_bank(session=session, name=name, verdict=verdict, tenant=tenant_id).id


def record_decision(
    *, session: Session, submission_id: str, label: str, reviewer: str, review_id: str
) -> int | None:
    """Puts a decided submission's hash in its tenant's bank for ``label`` and takes it out of
    the tenant's banks of the other verdict (a reversed decision); returns the new entry's id, or
    None (no hash stored, the tenant's policy says no, or it is there already)."""
    tenant_id = session.scalar(select(Submission.tenant_id).where(Submission.id == submission_id))
    media = media_hash_of(session=session, submission_id=submission_id)
    if tenant_id is None or media is None:
        return None
    if not get_policy(session=session, tenant_id=tenant_id).auto_add:
        return None
    active = session.execute(
        select(BankEntry.id, Bank.verdict)
        .join(Bank, Bank.id == BankEntry.bank_id)
        .where(
            BankEntry.submission_id == submission_id,
            BankEntry.source == EntrySource.REVIEW,
            BankEntry.removed_at.is_(None),
            Bank.tenant_id == tenant_id,
        )
    ).all()
    for entry_id, verdict in active:
        if verdict != label:
            reason = f"decision reversed to {label} (review {review_id})"
            remove_entry(session=session, entry_id=entry_id, by=reviewer, reason=reason)
    if any(verdict == label for _id, verdict in active):
        return None
    bank_id = _tenant_bank(session, tenant_id, label)
    entry_id = add_entry(
        session=session,
        bank_id=bank_id,
        media=media,
        source=EntrySource.REVIEW,
        submission_id=submission_id,
        review_id=review_id,
        added_by=reviewer,
    )
    logger.info(
        "submission %s added to bank %s as %s by %s", submission_id, bank_id, label, reviewer
    )
    return entry_id
