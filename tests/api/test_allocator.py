"""glibc's thresholds in the API processes (webhook_api.allocator): freed upload-sized buffers
are reused without page faults; an operator's own malloc environment is left alone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import pytest

from moderation.settings import PROJECT_ROOT

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the thresholds are glibc's (elsewhere keep_freed_buffers does nothing)",
)

# Four threads (as a gunicorn gthread worker's) each serve uploads of mixed sizes the way the
# API handles one: read in chunks of up to 1 MiB into a growing buffer, joined, the file part
# sliced out, all freed. Prints the call's result and the process's minor page faults over a
# second round of requests (the first maps what the thresholds let it keep).
_PROGRAM = """
import io, json, random, resource, sys, threading
from webhook_api.allocator import keep_freed_buffers
applied = keep_freed_buffers() if sys.argv[1] == "1" else None
SIZES = [20_000, 300_000, 900_000, 2_000_000, 5_000_000]
def upload(size):
    buffer, left = io.BytesIO(), size
    while left:
        chunk = bytes(min(left, 1 << 20))
        buffer.write(chunk)
        left -= len(chunk)
    body = buffer.getvalue()
    del buffer
    return len(body[200:-100])
def serve(seed):
    rng = random.Random(seed)
    for _ in range(30):
        upload(rng.choice(SIZES))
def round_of_requests():
    threads = [threading.Thread(target=serve, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
round_of_requests()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_of_requests()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _run(apply: bool, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "1" if apply else "0"],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_freed_upload_buffers_are_reused_without_page_faults() -> None:
    default = _run(apply=False)
    kept = _run(apply=True)
    assert kept["applied"] is True
    # glibc's default hands freed blocks back: every request faults its pages in again
    # (~60,000 for these 120 requests of 1.6 MB on average); kept, they are mapped already.
    assert int(default["faults"]) > 20_000, default
    assert int(kept["faults"]) < int(default["faults"]) / 10, (kept, default)


def test_an_operators_malloc_environment_wins() -> None:
    mine = _run(apply=True, MALLOC_TRIM_THRESHOLD_="0")
    assert mine["applied"] is False
    assert int(mine["faults"]) > 20_000, mine  # glibc's behaviour, as the operator asked


def test_the_api_server_sets_them_before_its_workers_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.app.base import BaseApplication

    from moderation.settings import load_settings
    from webhook_api import allocator, cli, server_errors

    calls: list[str] = []
    monkeypatch.setattr(server_errors, "install", lambda: None)  # gunicorn's, process-wide
    monkeypatch.setattr(allocator, "keep_freed_buffers", lambda: calls.append("thresholds"))
    monkeypatch.setattr(BaseApplication, "run", lambda self: calls.append("run"))
    cli.serve(load_settings(None), workers=1)
    assert calls == ["thresholds", "run"]
