"""Triton stopped under load: nothing fails, everything completes once it is back, /readyz tells.

A private Triton (not the session one) serves this test's stack. It is stopped while submissions
are in flight and more arrive, kept down (no process, nothing listening) for at least
:data:`OUTAGE_S`, then started again on the same ports; ``/readyz`` is asked every few seconds of
the outage and must report it each time. The worker's scoring retries
(``DFMOD_SCORE_RETRY_SCHEDULE``, 75 s in all here) outlast the outage, Triton's restart and the
gRPC channel's reconnect backoff, so no submission ends ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.settings import Settings
from serving.server import TritonServer
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import (
    FAULT_ENV,
    FINAL,
    Stack,
    assert_exactly_once,
    embedded_stack,
    statuses,
    submit_many,
    triton_env,
    wait_all_final,
    wait_some_final,
    wait_worker_ready,
)
from tests.fixtures.triton import private_server

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0
READYZ_EVERY_S = 5.0
BEFORE, DURING = 20, 10
# 75 s of retries in all: the 30 s outage, the restart (1-3 s) and the gRPC channel's reconnect
# backoff after it (grows about 1.6x per failed connect, so up to about 17 s here).
RETRY_SCHEDULE = "1,2,3,4" + ",5" * 13
ENV = {
    **FAULT_ENV,
    "DFMOD_TRITON_RETRIES": "0",
    "DFMOD_TRITON_TIMEOUT_S": "2",
    "DFMOD_SCORE_RETRY_SCHEDULE": RETRY_SCHEDULE,
    "DFMOD_STUCK_AFTER_S": "60",  # the retries, not the sweeper, carry jobs through the outage
}


@pytest.fixture()
def private_triton(tmp_path: Path) -> Iterator[TritonServer]:
    with private_server(tmp_path / "triton") as server:
        yield server


@pytest.fixture()
def stack(private_triton: TritonServer, tmp_path: Path) -> Iterator[Stack]:
    env = {**triton_env(private_triton), **ENV}
    with embedded_stack(tmp_path / "stack", env) as started:
        wait_worker_ready(started)
        yield started


def readyz(stack: Stack) -> tuple[int, dict]:
    response = stack.http.get(f"{stack.api_url}/readyz", timeout=15)
    return response.status_code, response.json()


def retry_window_s(schedule: str) -> float:
    return sum(float(s) for s in schedule.split(",") if s.strip())


def test_retry_schedules_outlast_the_outage() -> None:
    """This test's schedule and the production default both cover the outage with margin."""
    assert retry_window_s(RETRY_SCHEDULE) >= 2 * OUTAGE_S
    assert sum(Settings().score_retry_delays) >= 2 * OUTAGE_S


def test_triton_stopped_under_load__nothing_fails(
    stack: Stack, private_triton: TritonServer, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    assert readyz(stack)[0] == 200
    ids = submit_many(stack, tenant.api_key, BEFORE, callback_url=callback_receiver.url())
    wait_some_final(stack, tenant.api_key, ids, 3, timeout_s=60)
    stopping_at = time.monotonic()
    private_triton.stop()
    down_at = time.monotonic()  # the process has exited: nothing listens on Triton's ports
    assert not private_triton.running
    ids += submit_many(stack, tenant.api_key, DURING, callback_url=callback_receiver.url())
    waiting = [i for i, s in statuses(stack, tenant.api_key, ids).items() if s not in FINAL]
    assert len(waiting) >= DURING
    answers: list[tuple[int, dict]] = []
    while True:
        answers.append(readyz(stack))
        left = OUTAGE_S - (time.monotonic() - down_at)
        if left <= 0:
            break
        time.sleep(min(READYZ_EVERY_S, left))
    for code, body in answers:
        assert code == 503 and body["checks"]["triton"]["ok"] is False, body
        assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"], body
    assert "failed" not in statuses(stack, tenant.api_key, ids).values()
    restart_at = time.monotonic()
    private_triton.start(timeout_s=120)
    ready_at = time.monotonic()
    downtime_s, unready_s = restart_at - down_at, ready_at - stopping_at
    assert downtime_s >= OUTAGE_S
    assert readyz(stack)[0] == 200
    finals = wait_all_final(stack, tenant.api_key, ids, timeout_s=90)
    recovered_s = time.monotonic() - ready_at
    assert "failed" not in {b["status"] for b in finals.values()}
    assert_exactly_once(stack, ids, with_callbacks=True)
    callback_receiver.wait_for(len(ids), timeout_s=30)
    print(
        f"\ntriton down: {len(ids)} submissions, {len(waiting)} waiting; no Triton process for "
        f"{downtime_s:.1f}s, not ready for {unready_s:.1f}s (stop and restart included); "
        f"/readyz 503 {len(answers)} times during it; all final {recovered_s:.1f}s after ready, "
        f"0 failed; retries {retry_window_s(RETRY_SCHEDULE):g}s in all"
    )
