"""``dfmod labels export``: reviewed submissions become a training set with provenance."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from moderation.blobs import BlobStore
from moderation.cli import main
from moderation.db import session_scope
from moderation.labels import export_labels
from moderation.reviews import ReviewError, add_review
from moderation.submissions import create_submission
from training.data import discover, read_manifest


def _submit(session: Session, tenant_id: str, blobs: BlobStore, data: bytes) -> str:
    sha = blobs.put(data)
    return create_submission(
        session=session, tenant_id=tenant_id, media_kind="image", blob_sha256=sha
    ).id


def _reviewed(
    factory: sessionmaker[Session], tenant_id: str, blobs: BlobStore, images: Path
) -> dict[str, str]:
    """Submits every image, reviews each with its folder's label; returns {submission: label}."""
    expected = {}
    with session_scope(factory) as session:
        for path in sorted(images.rglob("*.jpg")):
            sid = _submit(session, tenant_id, blobs, path.read_bytes())
            add_review(session, submission_id=sid, reviewer="ana", label=path.parent.name)
            expected[sid] = path.parent.name
    return expected


def test_export_writes_train_layout_with_provenance(
    database: tuple[str, sessionmaker[Session]],
    blobs: BlobStore,
    tenant_id: str,
    tiny_data: dict[str, Path],
    tmp_path: Path,
) -> None:
    _, factory = database
    expected = _reviewed(factory, tenant_id, blobs, tiny_data["reviewed"])
    flipped = next(iter(expected))
    with session_scope(factory) as session:
        # A second opinion replaces the first; a video and a never-fetched URL are left out.
        new_label = "real" if expected[flipped] == "fake" else "fake"
        add_review(session, submission_id=flipped, reviewer="ben", label=new_label)
        expected[flipped] = new_label
        video = create_submission(
            session=session, tenant_id=tenant_id, media_kind="video", blob_sha256=blobs.put(b"x")
        ).id
        add_review(session, submission_id=video, reviewer="ana", label="fake")
        url = create_submission(
            session=session, tenant_id=tenant_id, media_kind="image", media_url="http://x/a.png"
        ).id
        add_review(session, submission_id=url, reviewer="ana", label="real")
        unreviewed = _submit(session, tenant_id, blobs, b"never reviewed")

    out = tmp_path / "labels"
    with session_scope(factory) as session:
        result = export_labels(session=session, blobs=blobs, out=out)
    assert {sid for sid, _ in result.skipped} == {video, url}
    with open(out / "labels.csv", newline="") as handle:
        rows = {row["submission_id"]: row for row in csv.DictReader(handle)}
    assert {sid: row["label"] for sid, row in rows.items()} == expected
    assert unreviewed not in rows
    assert rows[flipped]["reviewer"] == "ben" and rows[flipped]["review_id"].startswith("rev")
    assert all(row["reviewed_at"] and row["tenant_id"] == tenant_id for row in rows.values())
    # Both layouts dfmod train reads agree with the reviews.
    by_path = {s.path.resolve(): s.label for s in discover(out)}
    assert by_path == {s.path.resolve(): s.label for s in read_manifest(out / "labels.csv")}
    assert sorted(by_path.values()) == sorted(int(v == "fake") for v in expected.values())
    for row in rows.values():
        assert blobs.get(row["sha256"]) == (out / row["path"]).read_bytes()


def test_export_replaces_a_previous_export(
    database: tuple[str, sessionmaker[Session]], blobs: BlobStore, tenant_id: str, tmp_path: Path
) -> None:
    out = tmp_path / "labels"
    (out / "real").mkdir(parents=True)
    (out / "real" / "stale.jpg").write_bytes(b"old")
    with session_scope(database[1]) as session:
        result = export_labels(session=session, blobs=blobs, out=out)
    assert result.total == 0 and not (out / "real" / "stale.jpg").exists()
    assert (out / "labels.csv").read_text().startswith("path,label,submission_id")


def test_review_refuses_unknown_label_and_submission(
    database: tuple[str, sessionmaker[Session]], blobs: BlobStore, tenant_id: str
) -> None:
    with session_scope(database[1]) as session:
        sid = _submit(session, tenant_id, blobs, b"data")
        with pytest.raises(ReviewError, match="expected one of real, fake"):
            add_review(session, submission_id=sid, reviewer="ana", label="maybe")
        with pytest.raises(ReviewError, match="no submission"):
            add_review(session, submission_id="sub_missing", reviewer="ana", label="fake")


def test_cli_export(
    database: tuple[str, sessionmaker[Session]],
    blobs: BlobStore,
    tenant_id: str,
    tiny_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, factory = database
    expected = _reviewed(factory, tenant_id, blobs, tiny_data["reviewed"])
    monkeypatch.setenv("DFMOD_DATABASE_URL", url)
    monkeypatch.setenv("DFMOD_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["labels", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"{len(expected)} images (6 real, 6 fake)" in result.output
    assert len(read_manifest(tmp_path / "out" / "labels.csv")) == len(expected)
