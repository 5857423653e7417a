"""Triton stopped under load: nothing fails, everything completes once it is back, /readyz tells.

A private Triton (not the session one) serves this test's stack. It is stopped while submissions
are in flight and more arrive, kept down for :data:`OUTAGE_S`, then started again on the same
ports. The worker's scoring retries (``DFMOD_SCORE_RETRY_SCHEDULE``, 43 s in all here) outlast the
outage, so no submission ends ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.settings import PROJECT_ROOT
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import FINAL, Stack, embedded_stack, triton_env
from tests.fixtures.triton import copy_repository, start_server
from tests.reliability.conftest import (
    FAULT_ENV,
    assert_exactly_once,
    statuses,
    submit_many,
    wait_all_final,
    wait_some_final,
)
from worker.triton_server import TritonServer

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
BEFORE, DURING = 20, 10
ENV = {
    **FAULT_ENV,
    "DFMOD_TRITON_RETRIES": "0",
    "DFMOD_TRITON_TIMEOUT_S": "2",
    "DFMOD_SCORE_RETRY_SCHEDULE": "1,2,3,5,5,5,5,5,6,6",
    "DFMOD_STUCK_AFTER_S": "60",  # the retries, not the sweeper, carry jobs through the outage
}


@pytest.fixture()
def private_triton(tmp_path: Path) -> Iterator[TritonServer]:
    repository = copy_repository(PROJECT_ROOT / "model_repository", tmp_path / "repository")
    server = start_server(repository, tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def stack(private_triton: TritonServer, tmp_path: Path) -> Iterator[Stack]:
    env = {**triton_env(private_triton), **ENV}
    started = embedded_stack(tmp_path / "stack", env).start()
    try:
        yield started
    finally:
        started.stop()


def readyz(stack: Stack) -> tuple[int, dict]:
    response = stack.http.get(f"{stack.api_url}/readyz", timeout=15)
    return response.status_code, response.json()


def test_triton_stopped_under_load__nothing_fails(
    stack: Stack, private_triton: TritonServer, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    assert readyz(stack)[0] == 200
    ids = submit_many(stack, tenant.api_key, BEFORE, callback_url=callback_receiver.url())
    wait_some_final(stack, tenant.api_key, ids, 3, timeout_s=60)
    private_triton.stop()
    stopped_at = time.monotonic()
    ids += submit_many(stack, tenant.api_key, DURING, callback_url=callback_receiver.url())
    code, body = readyz(stack)
    assert code == 503 and body["checks"]["triton"]["ok"] is False, body
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"], body
    waiting = [i for i, s in statuses(stack, tenant.api_key, ids).items() if s not in FINAL]
    assert len(waiting) >= DURING
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
    assert "failed" not in statuses(stack, tenant.api_key, ids).values()
    private_triton.start(timeout_s=120)
    outage_s = time.monotonic() - stopped_at
    assert readyz(stack)[0] == 200
    finals = wait_all_final(stack, tenant.api_key, ids, timeout_s=90)
    recovered_s = time.monotonic() - stopped_at - outage_s
    assert "failed" not in {b["status"] for b in finals.values()}
    assert_exactly_once(stack, ids, with_callbacks=True)
    callback_receiver.wait_for(len(ids), timeout_s=30)
    print(
        f"\ntriton down: {len(ids)} submissions, {len(waiting)} waiting in the outage of "
        f"{outage_s:.1f}s (restart included), all final {recovered_s:.1f}s after it, 0 failed"
    )
