"""glibc's allocator in the API processes: freed upload buffers are kept for the next request.

Each upload passes through several buffers of its own size (gunicorn's read buffer, the joined
body, the file part's slice). glibc serves such blocks (over its adaptive ``mmap`` threshold)
from fresh ``mmap`` regions, or from a thread's arena whose freed top it hands back to the
kernel at once; either way the next upload faults every page in again, zero-filled by the
kernel: about 290 page faults per submission, 1.1 MiB, in ``bench_pipeline.py``. With a fixed
``mmap`` threshold of 32 MiB (glibc's largest) and a trim threshold of :data:`TRIM_THRESHOLD`,
blocks up to 32 MiB come from the arenas and freed ones stay mapped for the next request; the
API's CPU per submission fell by 0.5 ms and its resident memory rose by about 110 MiB over
three processes (docs/performance.md, "glibc keeps the API's freed upload buffers").

Applied in the gunicorn master before it forks (the workers inherit the settings). Not applied
when the operator tunes malloc through glibc's own environment variables, nor off glibc (musl,
macOS), where :func:`keep_freed_buffers` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

logger = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 64 * 1024 * 1024  # free memory an arena keeps at its top, per arena
# The environment through which an operator tunes glibc's malloc; set, it wins over ours.
GLIBC_MALLOC_ENV = (
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)


def keep_freed_buffers() -> bool:
    """Sets glibc's mmap and trim thresholds (see the module); returns whether they were set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(os.environ.get(name) for name in GLIBC_MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        done = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    except (OSError, AttributeError) as exc:  # no usable libc: the defaults stay
        logger.debug("malloc thresholds left at glibc's defaults: %s", exc)
        return False
    return done
