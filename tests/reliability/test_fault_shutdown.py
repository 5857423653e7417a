"""Graceful shutdown: SIGTERM to a worker and to the API while work is in flight; nothing lost.

The worker's warm shutdown finishes the task it runs and gives reserved, unacknowledged messages
back to the broker; the API (gunicorn) stops accepting and answers the requests it already has.
After a restart every accepted submission reaches one verdict.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from moderation.models import Verdict
from tests.fixtures.media import image_bytes
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import (
    FAULT_ENV,
    FINAL,
    Stack,
    assert_exactly_once,
    embedded_stack,
    rows_per_submission,
    statuses,
    submit_many,
    triton_env,
    wait_all_final,
)
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.integration

WORKER_BATCH = 100
STOP_BOUND_S = 30.0


@pytest.fixture()
def stack(triton_server: object, tmp_path: Path) -> Iterator[Stack]:
    env = {**triton_env(triton_server), **FAULT_ENV, "DFMOD_STUCK_AFTER_S": "60"}
    with embedded_stack(tmp_path / "stack", env) as started:
        yield started


def sigterm(stack: Stack, name: str) -> tuple[int, float]:
    """Returns (exit code, seconds) of a SIGTERMed stack process; fails past the bound."""
    proc = stack.procs[name]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=STOP_BOUND_S)
    return code, time.monotonic() - started


def test_worker_sigterm_mid_batch__nothing_lost(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    # Paused while the batch arrives, so there is a backlog (and messages the worker has reserved
    # but not started) when the SIGTERM lands, however fast it would have kept up. Verdict rows
    # (one query) say when it is under way: callbacks queue behind the backlog, GETs are slow.
    stack.procs["worker"].send_signal(signal.SIGSTOP)
    try:
        ids = submit_many(stack, tenant.api_key, WORKER_BATCH, callback_url=callback_receiver.url())
    finally:
        stack.procs["worker"].send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while sum(rows_per_submission(stack.database_url, Verdict, ids).values()) < 3:
        assert time.monotonic() < deadline, f"no verdicts after 60 s\n{stack.log_tail()}"
        time.sleep(0.05)
    code, took_s = sigterm(stack, "worker")
    assert code == 0, stack.log_tail()
    left = [i for i, s in statuses(stack, tenant.api_key, ids).items() if s not in FINAL]
    assert left, "the batch finished before the SIGTERM; the test proves nothing"
    stack._spawn("worker", "worker", *stack.worker_args)
    restarted = time.monotonic()
    # The sweeper waits 60 s here: only the broker's returned messages can finish this quickly.
    wait_all_final(stack, tenant.api_key, ids, timeout_s=45)
    assert_exactly_once(stack, ids, with_callbacks=True)
    print(
        f"\nworker SIGTERM: exit {code} in {took_s:.1f}s, {len(left)} of {WORKER_BATCH} left, "
        f"all final {time.monotonic() - restarted:.1f}s after the restart"
    )


def _submit_until_stopped(
    stack: Stack, key: str, stop: threading.Event, out: dict, seed: int
) -> None:
    with requests.Session() as http:
        while not stop.is_set():
            seed += 1
            try:
                response = http.post(
                    f"{stack.api_url}/v1/submissions",
                    files={"file": ("x.png", image_bytes((48, 48), seed=seed))},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
            except requests.RequestException:
                out["errors"] += 1
                time.sleep(0.05)
                continue
            if response.status_code == 202:
                out["accepted"].append(response.json()["id"])
            else:
                out["other"].append(response.status_code)


def test_api_sigterm_under_submissions__accepted_all_complete(stack: Stack) -> None:
    tenant = stack.tenant()
    stop = threading.Event()
    outs: list[dict[str, Any]] = [{"accepted": [], "errors": 0, "other": []} for _ in range(2)]
    threads = [
        threading.Thread(
            target=_submit_until_stopped, args=(stack, tenant.api_key, stop, out, 10_000 * n)
        )
        for n, out in enumerate(outs)
    ]
    for thread in threads:
        thread.start()
    try:
        # Under way: both threads are being answered when the SIGTERM lands.
        wait_until(
            lambda: all(len(out["accepted"]) >= 5 for out in outs),
            timeout_s=60,
            message=lambda: f"{outs}\n{stack.log_tail()}",
        )
        code, took_s = sigterm(stack, "api")
        time.sleep(0.5)  # the clients go on sending to the stopped API for a moment
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=40)
    assert code == 0, stack.log_tail()
    accepted = [i for out in outs for i in out["accepted"]]
    assert accepted and not [c for out in outs for c in out["other"]], outs
    stack._spawn("api", "api")
    wait_until(lambda: _healthy(stack), timeout_s=60, interval_s=0.2, message=stack.log_tail)
    wait_all_final(stack, tenant.api_key, accepted, timeout_s=60)
    assert_exactly_once(stack, accepted, with_callbacks=False)
    refused = sum(out["errors"] for out in outs)
    print(
        f"\nAPI SIGTERM: exit {code} in {took_s:.1f}s, {len(accepted)} accepted all final, "
        f"{refused} requests refused after the stop (the client's to retry)"
    )


def _healthy(stack: Stack) -> bool:
    try:
        return stack.http.get(f"{stack.api_url}/healthz", timeout=2).ok
    except requests.RequestException:
        return False
