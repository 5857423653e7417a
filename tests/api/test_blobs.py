"""Content-addressed blob storage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from moderation.blobs import BlobNotFound, BlobStore


def test_put_returns_sha256_and_get_returns_the_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.get(sha) == data
    assert store.path(sha) == tmp_path / sha[:2] / sha[2:4] / sha
    assert store.exists(sha)


def test_put_is_idempotent_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.put(b"same") == store.put(b"same")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and not files[0].name.startswith(".tmp-")


def test_get__fail_when_absent(tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound):
        BlobStore(tmp_path).get("0" * 64)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "g" * 64, "0" * 63])
def test_path__fail_on_anything_but_a_sha256(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="64 lower-case hex"):
        BlobStore(tmp_path).path(bad)


def test_put_with_a_known_digest_stores_under_it(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"uploaded bytes"
    digest = hashlib.sha256(data).hexdigest()
    assert store.put(data, sha256=digest) == digest
    assert store.get(digest) == data
    # A second blob under an existing prefix folder, and one recreating a removed folder.
    store.path(digest).unlink()
    store.path(digest).parent.rmdir()
    assert store.put(data, sha256=digest) == digest and store.get(digest) == data
