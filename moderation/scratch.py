"""Where files that a process rewrites on every request live: in memory (``/dev/shm``) when the
host has it, so that no request waits on the disk.

prometheus-client's multiprocess store (an ``mmap`` written on every metric update) and gunicorn's
worker heartbeat (an ``fchmod`` per request) only need to be shared between the processes of one
machine; on a disk-backed folder each write to a page the kernel has just written back faults into
the filesystem, and the journal's work is done while the request waits. gunicorn's documentation
gives the same advice for its heartbeat files (``--worker-tmp-dir /dev/shm``).
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_MEMORY = Path("/dev/shm")


def scratch_dir(fallback: Path | None = None) -> Path | None:
    """Returns ``/dev/shm`` when it is a folder this process may write in, else ``fallback``
    (None: the system's temporary folder)."""
    if SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK | os.X_OK):
        return SHARED_MEMORY
    return fallback
