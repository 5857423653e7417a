"""A media_url that trickles its body forever: the fetch ends at its time limit, the worker goes on.

A loopback server (``TrickleServer`` in ``tests/fixtures/receiver.py``) answers 200 with an
image content type and then sends one byte every ``BYTE_EVERY_S``, never finishing. Each byte
resets the socket's read timeout, so only the fetch's total limit (``DFMOD_FETCH_TIMEOUT_S``,
enforced by ``worker/fetch.py``'s watchdog that shuts the connection down at the deadline) can
end it. The submission must end ``failed`` / ``fetch_failed`` saying it took too long, the worker
must hang up at about that limit, and other submissions sent meanwhile and afterwards must be
scored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.media import image_bytes
from tests.fixtures.receiver import TrickleServer
from tests.fixtures.stack import (
    FAULT_ENV,
    FINAL,
    Stack,
    embedded_stack,
    statuses,
    submit_many,
    triton_env,
    wait_all_final,
    wait_worker_ready,
)

pytestmark = pytest.mark.integration

FETCH_TIMEOUT_S = 3.0
OTHERS = 6


@pytest.fixture()
def stack(triton_server: object, tmp_path: Path) -> Iterator[Stack]:
    env = {
        **triton_env(triton_server),
        **FAULT_ENV,
        "DFMOD_FETCH_TIMEOUT_S": str(FETCH_TIMEOUT_S),
        "DFMOD_OUTBOUND_ALLOWLIST": "127.0.0.1/32",
        "DFMOD_STUCK_AFTER_S": "60",  # no sweeper re-enqueue while the fetch is held
    }
    with embedded_stack(tmp_path / "stack", env) as started:
        wait_worker_ready(started)
        yield started


def test_trickling_media_url__failed_at_fetch_timeout__worker_keeps_serving(
    stack: Stack, trickle: TrickleServer
) -> None:
    key = stack.tenant().api_key
    response = stack.submit_url(key, trickle.url())
    assert response.status_code == 202, response.text
    slow_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while not trickle.requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trickle.requests, f"the worker never fetched the URL\n{stack.log_tail()}"
    fetch_started = trickle.requests[0]
    # Sent while one worker slot is held by the trickle: the other slot scores them.
    others = submit_many(stack, key, OTHERS, callback_url=None)
    scored_during, deadline = 0, time.monotonic() + FETCH_TIMEOUT_S + 30
    while not trickle.hung_up and time.monotonic() < deadline:
        scored_during = sum(1 for s in statuses(stack, key, others).values() if s in FINAL)
        time.sleep(0.2)
    hung_up = trickle.wait_hung_up(timeout_s=1)
    held_s = hung_up - fetch_started
    body = stack.wait_final(key, slow_id, timeout_s=30)
    failed_after_s = time.monotonic() - fetch_started
    assert body["status"] == "failed", body
    assert body["failure"]["reason"] == "fetch_failed", body
    assert "took too long" in body["failure"]["detail"], body
    # Bounded by the fetch limit, not by the trickle (the server would go on for 120 s); the
    # slack is for a watchdog thread and a write that notices the close on a busy machine.
    assert FETCH_TIMEOUT_S - 0.5 <= held_s < FETCH_TIMEOUT_S + 10, held_s
    assert len(trickle.requests) == 1, "a fetch failure is final, not retried"
    finals = wait_all_final(stack, key, others, timeout_s=90)
    assert "failed" not in {b["status"] for b in finals.values()}, finals
    # And after: the slot the trickle held is free again.
    after = stack.submit_file(key, image_bytes((48, 48), seed=4242))
    assert after.status_code == 202, after.text
    last = stack.wait_final(key, after.json()["id"], timeout_s=60)
    assert last["status"] != "failed", last
    print(
        f"\ntrickle: fetch limit {FETCH_TIMEOUT_S:g}s; worker hung up {held_s:.1f}s after the "
        f"request ({trickle.sent[0] if trickle.sent else '?'} bytes received), submission "
        f"failed/fetch_failed {failed_after_s:.1f}s after it; {scored_during} of {OTHERS} others "
        "final while the trickle held a worker slot, all scored, 1 more scored afterwards"
    )
