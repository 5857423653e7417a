"""Matching media against the banks: the in-process faiss index each worker keeps in step with SQL.

:class:`BankMatcher` finds every hash within ``max_distance`` (multi-index hashing), catches up by
bank generation and checks candidates against SQL (docs/design.md, "Known-media banks").
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from moderation.bank_models import Bank, BankEntry, BankVerdict
from moderation.banks import EntryInfo, current_generation
from moderation.db import session_scope
from moderation.mediahash import PDQ, VPDQ, MediaHash, hex_to_bytes

logger = logging.getLogger(__name__)

BITS = 256
# Chunks -> bits per chunk. 16 x 16 (HMA's) is the default; 11 x 23 takes a third of the CPU per
# lookup and nearly three times the memory (docs/design.md, docs/performance.md).
SPLITS = {16: 16, 11: 23}
DEFAULT_CHUNKS = 16
REBUILD_DEAD_SHARE = 0.25
LOAD_BATCH = 50_000


@dataclass(frozen=True)
class Match:
    """The bank entry a submission matched, as ``verdict.signals.match`` reports it."""

    bank_id: str
    bank: str
    verdict: str
    distance: int
    signal_type: str
    entry: EntryInfo
    frame_share: float | None = None  # videos: share of the item's frames that matched

    def to_json(self) -> dict[str, Any]:
        """Returns the ``signals.match`` object."""
        out = {
            "bank": self.bank,
            "bank_id": self.bank_id,
            "verdict": self.verdict,
            "distance": self.distance,
            "signal_type": self.signal_type,
            "entry_id": self.entry.id,
            "origin": self.entry.origin(),
        }
        if self.frame_share is not None:
            out["frame_share"] = round(self.frame_share, 4)
        return out


_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(EntryInfo))
# Core, not ORM: a lookup reads a handful of rows, and loading entities would cost more than it.
_CANDIDATES = (
    select(
        *(BankEntry.__table__.c[name] for name in _ENTRY_FIELDS),
        Bank.name.label("bank_name"),
        Bank.verdict.label("bank_verdict"),
    )
    .join(Bank, Bank.id == BankEntry.bank_id)
    .where(
        BankEntry.id.in_(bindparam("ids", expanding=True)),
        BankEntry.removed_at.is_(None),
        or_(Bank.tenant_id.is_(None), Bank.tenant_id == bindparam("tenant_id")),
    )
)


def _row_entry(row: Any) -> EntryInfo:
    return EntryInfo(**{name: row[name] for name in _ENTRY_FIELDS})


class HashIndex:
    """Binary PDQ hashes with int64 ids, searched by Hamming radius (exact, multi-index hashing)."""

    def __init__(self, max_distance: int, chunks: int = DEFAULT_CHUNKS) -> None:
        import faiss

        if chunks not in SPLITS:
            raise ValueError(f"chunks {chunks}; expected one of {sorted(SPLITS)}")
        self.max_distance = max_distance
        inner = faiss.IndexBinaryMultiHash(BITS, chunks, SPLITS[chunks])
        inner.nflip = max_distance // chunks
        self._inner = inner  # the IDMap does not own it: keep it alive
        self.index = faiss.IndexBinaryIDMap(inner)

    @property
    def size(self) -> int:
        """Returns how many hashes the index holds."""
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Adds hashes ([n, 32] uint8) under their ids."""
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(codes), ids.astype(np.int64))

    def search(self, code: np.ndarray) -> list[tuple[int, int]]:
        """Returns (id, distance) of every hash within ``max_distance`` of one hash."""
        if self.size == 0:
            return []
        lims, distances, ids = self.index.range_search(code.reshape(1, -1), self.max_distance + 1)
        return [(int(i), int(d)) for i, d in zip(ids[: lims[1]], distances[: lims[1]], strict=True)]


class BankMatcher:
    """The banks of one process, matched in memory and refreshed from SQL before each lookup."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        max_distance: int = 31,
        video_share: float = 0.8,
        min_quality: int = 50,
    ) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one lookup at a time is faster without OpenMP's fan-out
        self.session_factory = session_factory
        self.max_distance = max_distance
        self.video_share = video_share
        self.min_quality = min_quality
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.generation = -1
        self.images = HashIndex(self.max_distance)
        self.frames = HashIndex(self.max_distance)
        self.frame_owner: list[int] = []  # frame id -> entry id
        self.frame_count: dict[int, int] = {}  # video entry id -> its number of frames
        self.dead = 0

    @property
    def size(self) -> int:
        """Returns the number of entries indexed (removed ones included until a rebuild)."""
        return self.images.size + len(self.frame_count)

    def sync(self) -> None:
        """Catches up with the bank generation in SQL (cheap when nothing changed)."""
        with self._lock, session_scope(self.session_factory) as session:
            generation = current_generation(session)
            if generation == self.generation:
                return
            if self.dead > REBUILD_DEAD_SHARE * max(self.size, 1) and self.size:
                logger.info("rebuilding the bank index (%d of %d removed)", self.dead, self.size)
                self._reset()
            self._catch_up(session, generation)

    def _catch_up(self, session: Session, generation: int) -> None:
        since = self.generation
        seen = generation
        query = select(
            BankEntry.id,
            BankEntry.signal_type,
            BankEntry.pdq,
            BankEntry.frames,
            BankEntry.added_generation,
        ).where(BankEntry.added_generation > since, BankEntry.removed_at.is_(None))
        ids, codes = [], []
        for row in session.execute(query.execution_options(yield_per=LOAD_BATCH)):
            seen = max(seen, row.added_generation)
            if row.signal_type == VPDQ:
                self._add_video(row.id, row.frames or [])
            else:
                ids.append(row.id)
                codes.append(bytes.fromhex(row.pdq))
            if len(ids) >= LOAD_BATCH:
                self._add_images(ids, codes)
                ids, codes = [], []
        self._add_images(ids, codes)
        if since >= 0:
            self.dead += int(
                session.scalar(
                    select(func.count(BankEntry.id)).where(BankEntry.removed_generation > since)
                )
                or 0
            )
        self.generation = seen

    def _add_images(self, ids: list[int], codes: list[bytes]) -> None:
        if ids:
            array = np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(ids), 32)
            self.images.add(np.asarray(ids, dtype=np.int64), array)

    def _add_video(self, entry_id: int, frames: list[dict[str, Any]]) -> None:
        if not frames:
            return
        start = len(self.frame_owner)
        self.frame_owner.extend([entry_id] * len(frames))
        self.frame_count[entry_id] = len(frames)
        codes = np.stack([hex_to_bytes(f["pdq"]) for f in frames])
        self.frames.add(np.arange(start, start + len(frames), dtype=np.int64), codes)

    def match(
        self, *, media: MediaHash, tenant_id: str, generation: int | None = None
    ) -> Match | None:
        """Returns the best match of a submission's hash in the banks its tenant sees, or None.

        ``generation``: the bank generation the caller has just read (the scorer's claim returns
        it), which spares the lookup its own read when the index holds it already."""
        if generation is None or generation > self.generation:
            self.sync()
        candidates: dict[int, tuple[int, float | None]]
        if media.signal_type == PDQ:
            assert media.pdq is not None
            if media.pdq.quality < self.min_quality:
                return None
            with self._lock:
                found = self.images.search(hex_to_bytes(media.pdq.hex))
            candidates = {entry: (distance, None) for entry, distance in found}
        else:
            candidates = self._video_candidates(media)
        return self._best(candidates, tenant_id) if candidates else None

    def _video_candidates(self, media: MediaHash) -> dict[int, tuple[int, float | None]]:
        usable = [f for f in media.frames if f.hash.quality >= self.min_quality]
        if not usable:
            return {}
        hits: dict[int, dict[int, int]] = defaultdict(dict)  # entry -> query frame -> distance
        matched_frames: dict[int, set[int]] = defaultdict(set)  # entry -> its frames matched
        with self._lock:
            for q, frame in enumerate(usable):
                for frame_id, distance in self.frames.search(hex_to_bytes(frame.hash.hex)):
                    entry = self.frame_owner[frame_id]
                    hits[entry][q] = min(distance, hits[entry].get(q, distance))
                    matched_frames[entry].add(frame_id)
            counts = dict(self.frame_count)
        out: dict[int, tuple[int, float | None]] = {}
        for entry, per_frame in hits.items():
            query_share = len(per_frame) / len(usable)
            entry_share = len(matched_frames[entry]) / max(counts.get(entry, 1), 1)
            if query_share >= self.video_share and entry_share >= self.video_share:
                out[entry] = (int(np.median(list(per_frame.values()))), query_share)
        return out

    def _best(
        self, candidates: dict[int, tuple[int, float | None]], tenant_id: str
    ) -> Match | None:
        with session_scope(self.session_factory) as session:
            rows = session.execute(
                _CANDIDATES, {"ids": list(candidates), "tenant_id": tenant_id}
            ).all()
            found = [(_row_entry(r._mapping), r.bank_name, r.bank_verdict) for r in rows]
        if not found:
            return None
        # A fake bank outranks a real one (someone judged this media manipulated), then distance.
        entry, name, verdict = min(
            found, key=lambda r: (r[2] != BankVerdict.FAKE, candidates[r[0].id][0], r[0].id)
        )
        distance, share = candidates[entry.id]
        return Match(entry.bank_id, name, verdict, distance, entry.signal_type, entry, share)
