"""A crash between the database commit and the broker publish: the job is picked up anyway.

Injected by starting the API with a broker it cannot reach (a Redis URL on a closed loopback
port), while the worker uses the real (SQLite) broker: every submission commits, the publish
fails, the row stays ``received``. With ``DFMOD_STUCK_AFTER_S`` lowered the sweeper moves it
on; with the defaults the workers' orphan check does (unleased rows beyond what the broker's
queue holds, two leases old: 30 s), well before the sweeper's 300 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import (
    FAULT_ENV,
    Stack,
    assert_exactly_once,
    closed_port,
    embedded_stack,
    statuses,
    submit_many,
    triton_env,
    wait_all_final,
)

pytestmark = pytest.mark.integration

SUBMISSIONS = 5
STUCK_AFTER_S = 3


def _api_without_broker(env: dict[str, str], root: Path) -> Stack:
    started = embedded_stack(root, env)
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
    return started


@pytest.fixture()
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**triton_env(triton_server), **FAULT_ENV, "DFMOD_STUCK_AFTER_S": str(STUCK_AFTER_S)}
    with _api_without_broker(env, tmp_path_factory.mktemp("fault-enqueue")) as started:
        yield started


@pytest.fixture()
def default_stack(
    triton_server: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    env = {**triton_env(triton_server), "DFMOD_CALLBACK_TIMEOUT_S": "2"}
    with _api_without_broker(env, tmp_path_factory.mktemp("fault-enqueue-defaults")) as started:
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


def test_publish_fails__default_settings__orphan_check_completes_within_a_minute(
    default_stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    stack = default_stack
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    started = time.monotonic()
    ids = submit_many(stack, tenant.api_key, SUBMISSIONS, callback_url=callback_receiver.url())
    assert set(statuses(stack, tenant.api_key, ids).values()) == {"received"}
    finals = wait_all_final(stack, tenant.api_key, ids, timeout_s=60)
    elapsed = time.monotonic() - started
    assert {b["status"] for b in finals.values()} <= {"auto_passed", "auto_flagged", "needs_review"}
    assert_exactly_once(stack, ids, with_callbacks=True)
    log = (stack.root / "worker.log").read_text(errors="replace")
    assert "re-enqueued" in log and "sweep: fetch 0, score" not in log  # not the sweeper
    print(f"\nenqueue crash, defaults: {SUBMISSIONS} left received, scored {elapsed:.1f}s after")
