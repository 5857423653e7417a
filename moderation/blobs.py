"""Content-addressed blob storage: media bytes stored once under their SHA-256.

The API writes uploads here inside the request (no decoding) and the worker reads them back by
hash, so identical uploads share one file and a blob can never change under a submission. Files
land atomically (temporary file + rename) so a crashed writer never leaves half a blob.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(KeyError):
    """No blob with that hash is stored."""


class BlobStore:
    """Files under ``root/ab/cd/<sha256>``; a local folder or a shared volume."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Returns where the blob with this hash lives (whether or not it exists)."""
        if not _SHA256.match(sha256):
            raise ValueError(f"expected 64 lower-case hex digits, got {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes, *, sha256: str | None = None) -> str:
        """Stores the bytes (once) and returns their SHA-256 hex digest.

        ``sha256`` spares hashing the bytes again when the caller already has their digest (the
        API hashes an upload once for both the Idempotency-Key and the store); it is trusted, so
        pass only ``hashlib.sha256(data).hexdigest()`` of these very bytes.
        """
        if sha256 is None:
            sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256)
        if target.exists():
            return sha256
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        except FileNotFoundError:  # first blob under this prefix: create the folders once
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.debug("stored blob %s (%d bytes)", sha256, len(data))
        return sha256

    def get(self, sha256: str) -> bytes:
        """Returns the stored bytes; raises :class:`BlobNotFound` when absent."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(sha256) from exc

    def exists(self, sha256: str) -> bool:
        """Returns whether a blob with this hash is stored."""
        return self.path(sha256).exists()
