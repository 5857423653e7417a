"""Reviewed submissions as a training set (``dfmod labels export DIR``).

Writes ``DIR/real/``, ``DIR/fake/`` and ``DIR/labels.csv`` with each row's provenance; the newest
review decides the label; videos are left out and counted.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.blobs import BlobNotFound, BlobStore
from moderation.models import Review, Submission

logger = logging.getLogger(__name__)

MANIFEST = "labels.csv"
COLUMNS = (
    "path",
    "label",
    "submission_id",
    "tenant_id",
    "sha256",
    "review_id",
    "reviewer",
    "reviewed_at",
)
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}


@dataclass
class LabelExport:
    """What an export wrote: the manifest, rows per label and what was left out (and why)."""

    folder: Path
    manifest: Path
    counts: dict[str, int] = field(default_factory=lambda: {"real": 0, "fake": 0})
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def latest_reviews(session: Session) -> list[tuple[Review, Submission]]:
    """Returns the newest review of every reviewed submission, oldest submission first."""
    rows = session.execute(
        select(Review, Submission)
        .join(Submission, Submission.id == Review.submission_id)
        .order_by(Review.created_at, Review.id)
    ).all()
    newest: dict[str, tuple[Review, Submission]] = {}
    for review, submission in rows:
        newest[submission.id] = (review, submission)
    return sorted(newest.values(), key=lambda pair: (pair[1].created_at, pair[1].id))


def _image_suffix(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _SUFFIX.get(str(image.format))
    except (UnidentifiedImageError, OSError):
        return None


def _media(blobs: BlobStore, submission: Submission) -> tuple[bytes | None, str]:
    if not submission.blob_sha256:
        return None, "no stored media (never fetched)"
    try:
        data = blobs.get(submission.blob_sha256)
    except BlobNotFound:
        return None, f"blob {submission.blob_sha256} is missing"
    return data, ""


def export_labels(*, session: Session, blobs: BlobStore, out: Path) -> LabelExport:
    """Writes reviewed images and ``labels.csv`` into ``out`` (replaced atomically if present)."""
    out = Path(out).resolve()
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    result = LabelExport(folder=out, manifest=out / MANIFEST)
    rows: list[dict[str, str]] = []
    for name in result.counts:
        (staging / name).mkdir(parents=True)
    for review, submission in latest_reviews(session):
        data, why = _media(blobs, submission)
        suffix = _image_suffix(data) if data is not None else None
        if data is None or suffix is None:
            result.skipped.append((submission.id, why or "not a still image"))
            continue
        relative = f"{review.label}/{submission.id}{suffix}"
        (staging / relative).write_bytes(data)
        result.counts[review.label] += 1
        rows.append(_row(relative, review, submission))
    _write_manifest(staging / MANIFEST, rows)
    _replace(staging, out)
    logger.info(
        "exported %d reviewed images (%s) to %s; skipped %d",
        result.total,
        result.counts,
        out,
        len(result.skipped),
    )
    return result


def _row(relative: str, review: Review, submission: Submission) -> dict[str, str]:
    return {
        "path": relative,
        "label": review.label,
        "submission_id": submission.id,
        "tenant_id": submission.tenant_id,
        "sha256": submission.blob_sha256 or "",
        "review_id": review.id,
        "reviewer": review.reviewer,
        "reviewed_at": review.created_at.isoformat(),
    }


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _replace(staging: Path, out: Path) -> None:
    """Swaps ``staging`` in for ``out``: readers see the old export or the new one, never half."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)
