"""CSV import and export of bank entries, in the shape HMA and ThreatExchange tools exchange.

One PDQ hash per row, with or without a header (accepted column names: :func:`read_rows`);
export writes ``signal_type,signal_value`` first, then the entry's origin.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.bank_models import BankEntry, EntrySource
from moderation.banks import BankError, BankInfo, add_entry, bump_generation
from moderation.mediahash import PDQ, InvalidHash, PdqHash, normalize_hex

logger = logging.getLogger(__name__)

HASH_COLUMNS = ("signal_value", "pdq", "pdq_hash", "hash")
ID_COLUMNS = ("external_id", "id", "indicator_id")
NOTE_COLUMNS = ("note", "tags")
EXPORT_COLUMNS = (
    "signal_type",
    "signal_value",
    "quality",
    "bank",
    "verdict",
    "entry_id",
    "source",
    "submission_id",
    "external_id",
    "import_source",
    "added_by",
    "note",
    "created_at",
)
MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class Row:
    """One hash read from a file, with its line number."""

    line: int
    pdq: str
    quality: int | None
    external_id: str | None
    note: str | None


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    added: int
    duplicates: int  # already active in the bank
    other_signals: int  # rows of other signal types (e.g. video hashes), skipped


def _first(header: list[str], names: Iterable[str]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _cell(cells: list[str], index: int | None) -> str | None:
    if index is None or index >= len(cells):
        return None
    return cells[index].strip() or None


def _quality(text: str | None, line: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(float(text))
    except ValueError as exc:
        raise InvalidHash(f"quality {text!r} is not a number") from exc
    if not 0 <= value <= 100:
        raise InvalidHash(f"quality {value} is outside 0-100")
    return value


def read_rows(handle: IO[str]) -> tuple[list[Row], list[str], int]:
    """Returns (rows, errors with line numbers, rows of other signal types) of a CSV file."""
    reader = csv.reader(handle)
    rows: list[Row] = []
    errors: list[str] = []
    others = 0
    header: list[str] | None = None
    for number, cells in enumerate(reader, start=1):
        if not cells or all(not c.strip() for c in cells) or cells[0].startswith("#"):
            continue
        lowered = [c.strip().lower() for c in cells]
        if header is None and number == 1 and _first(lowered, HASH_COLUMNS) is not None:
            header = lowered
            continue
        try:
            row = _parse(cells, header, number)
        except InvalidHash as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if row is None:
            others += 1
        else:
            rows.append(row)
    return rows, errors, others


def _parse(cells: list[str], header: list[str] | None, line: int) -> Row | None:
    if header is None:
        if len(cells) >= 2 and cells[0].strip().lower() in (PDQ, "vpdq", "md5", "video_md5"):
            if cells[0].strip().lower() != PDQ:
                return None
            return Row(line, normalize_hex(cells[1]), None, None, None)
        return Row(line, normalize_hex(cells[0]), None, None, None)
    kind = _cell(cells, _first(header, ("signal_type",)))
    if kind is not None and kind.lower() != PDQ:
        return None
    value = _cell(cells, _first(header, HASH_COLUMNS)) or ""
    return Row(
        line,
        normalize_hex(value),
        _quality(_cell(cells, _first(header, ("quality",))), line),
        _cell(cells, _first(header, ID_COLUMNS)),
        _cell(cells, _first(header, NOTE_COLUMNS)),
    )


def import_csv(
    *, session: Session, bank: BankInfo, handle: IO[str], source: str, by: str
) -> ImportResult:
    """Adds a file's hashes to a bank in one transaction; any invalid row refuses the whole file
    (BankError listing the first ones), so nothing is half-imported."""
    rows, errors, others = read_rows(handle)
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = (
            f" (and {len(errors) - MAX_ERRORS_SHOWN} more)"
            if len(errors) > MAX_ERRORS_SHOWN
            else ""
        )
        raise BankError(f"{len(errors)} invalid row(s), nothing imported: {shown}{more}")
    present = set(
        session.scalars(
            select(BankEntry.pdq).where(
                BankEntry.bank_id == bank.id, BankEntry.removed_at.is_(None)
            )
        )
    )
    generation = bump_generation(session)
    added = duplicates = 0
    for row in rows:
        if row.pdq in present:
            duplicates += 1
            continue
        present.add(row.pdq)
        add_entry(
            session=session,
            bank_id=bank.id,
            media=PdqHash(row.pdq, row.quality if row.quality is not None else 100),
            source=EntrySource.IMPORT,
            generation=generation,
            import_source=source,
            external_id=row.external_id,
            note=row.note,
            added_by=by,
        )
        added += 1
    logger.info("imported %d hashes into bank %s from %s", added, bank.name, source)
    return ImportResult(added, duplicates, others)


def export_rows(*, session: Session, bank: BankInfo) -> Iterator[list[str]]:
    """Yields the header and one row per active PDQ entry of a bank (oldest first)."""
    yield list(EXPORT_COLUMNS)
    query = (
        select(BankEntry)
        .where(BankEntry.bank_id == bank.id, BankEntry.removed_at.is_(None))
        .order_by(BankEntry.id)
    )
    for e in session.scalars(query.execution_options(yield_per=10_000)):
        if e.signal_type != PDQ:
            continue
        yield [
            PDQ, e.pdq, "" if e.quality is None else str(e.quality), bank.name, bank.verdict,
            str(e.id), e.source, e.submission_id or "", e.external_id or "",
            e.import_source or "", e.added_by or "", e.note or "", e.created_at.isoformat(),
        ]  # fmt: skip


def export_csv(*, session: Session, bank: BankInfo, handle: IO[str]) -> int:
    """Writes a bank's PDQ entries as CSV; returns how many."""
    writer = csv.writer(handle, lineterminator="\n")
    count = -1
    for row in export_rows(session=session, bank=bank):
        writer.writerow(row)
        count += 1
    return count


def csv_text(rows: Iterable[list[str]]) -> str:
    """Returns rows as CSV text (tests and the dashboard)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
