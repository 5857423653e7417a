"""A crash between the database commit and the broker publish: the sweeper picks the job up.

Injected by starting the API with a broker it cannot reach (a Redis URL on a closed loopback
port), while the worker uses the real (SQLite) broker: every submission commits, the publish
fails, the row stays ``received``, and only the worker's sweeper can move it on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import Stack, closed_port, embedded_stack, triton_env
from tests.reliability.conftest import (
    FAULT_ENV,
    assert_exactly_once,
    statuses,
    submit_many,
    wait_all_final,
)

pytestmark = pytest.mark.integration

SUBMISSIONS = 5
STUCK_AFTER_S = 3


@pytest.fixture()
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**triton_env(triton_server), **FAULT_ENV, "DFMOD_STUCK_AFTER_S": str(STUCK_AFTER_S)}
    started = embedded_stack(tmp_path_factory.mktemp("fault-enqueue"), env)
    refusing_broker = f"redis://127.0.0.1:{closed_port()}/0"
    spawn = started._spawn

    def spawn_api_without_broker(name: str, *args: str) -> None:
        worker_env = started.env
        if name == "api":
            started.env = {**worker_env, "DFMOD_BROKER_URL": refusing_broker}
        try:
            spawn(name, *args)
        finally:
            started.env = worker_env

    started._spawn = spawn_api_without_broker  # type: ignore[method-assign]
    with started:
        yield started


def test_publish_fails__stays_received__sweeper_completes(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    started = time.monotonic()
    ids = submit_many(stack, tenant.api_key, SUBMISSIONS, callback_url=callback_receiver.url())
    assert set(statuses(stack, tenant.api_key, ids).values()) == {"received"}
    finals = wait_all_final(stack, tenant.api_key, ids, timeout_s=60)
    elapsed = time.monotonic() - started
    assert {b["status"] for b in finals.values()} <= {"auto_passed", "auto_flagged", "needs_review"}
    assert elapsed >= STUCK_AFTER_S  # moved only once the sweeper found the rows stuck
    assert_exactly_once(stack, ids, with_callbacks=True)
    callback_receiver.wait_for(SUBMISSIONS, timeout_s=30)
    assert "sweep: fetch 0, score" in (stack.root / "worker.log").read_text(errors="replace")
    print(f"\nenqueue crash: {SUBMISSIONS} left received, all scored {elapsed:.1f}s after submit")
