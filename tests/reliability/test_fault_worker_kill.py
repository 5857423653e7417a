"""Worker killed with SIGKILL mid-batch: after a restart every submission has exactly one verdict.

Recovery mechanism: the worker acknowledges late, but a SIGKILLed worker's reserved messages are
not given back by the SQLite broker (and Redis only after its one-hour visibility timeout), so the
sweeper (``DFMOD_STUCK_AFTER_S`` lowered to 8 s here) re-enqueues the rows that stopped moving.
Idempotent scoring and claimed callback attempts keep it exactly-once in the database.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import FINAL, Stack, embedded_stack, triton_env
from tests.reliability.conftest import (
    FAULT_ENV,
    assert_exactly_once,
    kill_tree,
    statuses,
    submit_stream,
    wait_all_final,
    webhook_ids_by_submission,
)

pytestmark = pytest.mark.integration

SUBMISSIONS = 200


@pytest.fixture()
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**triton_env(triton_server), **FAULT_ENV}
    with embedded_stack(tmp_path_factory.mktemp("fault-kill"), env) as started:
        yield started


def test_worker_sigkill_mid_batch__each_submission_scored_once(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    # Submissions keep arriving while the worker is killed: the kill lands mid-stream, however
    # fast the worker keeps up with a single client.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        submitted = pool.submit(
            submit_stream, stack, tenant.api_key, SUBMISSIONS, callback_receiver.url()
        )
        callback_receiver.wait_for(5, timeout_s=60)
        worker = stack.procs["worker"]
        kill_tree(worker.pid)
        worker.wait(timeout=10)
        killed_at = time.monotonic()
        ids = submitted.result(timeout=120)
    unfinished = [i for i, s in statuses(stack, tenant.api_key, ids).items() if s not in FINAL]
    assert unfinished, "the batch finished before the kill; the test proves nothing"
    stack._spawn("worker", "worker", *stack.worker_args)
    finals = wait_all_final(stack, tenant.api_key, ids, timeout_s=150)
    recovery_s = time.monotonic() - killed_at
    assert {b["status"] for b in finals.values()} <= {"auto_passed", "auto_flagged", "needs_review"}
    assert_exactly_once(stack, ids, with_callbacks=True)
    callback_receiver.wait_for(SUBMISSIONS, timeout_s=60)
    seen = webhook_ids_by_submission(callback_receiver)
    assert set(seen) == set(ids)
    assert all(len(webhook_ids) == 1 for webhook_ids in seen.values()), seen
    swept = re.findall(r"sweep: fetch \d+, score (\d+), deliver (\d+)", _restarted_log(stack))
    print(
        f"\nworker kill: {SUBMISSIONS} submitted, {len(unfinished)} unfinished at the kill, "
        f"all final {recovery_s:.1f}s after it, {len(callback_receiver.received)} callbacks; "
        f"sweeper re-enqueued (score, deliver): {swept}"
    )


def _restarted_log(stack: Stack) -> str:
    """Returns the worker log written since the restart (the killed worker's part dropped)."""
    text = (stack.root / "worker.log").read_text(errors="replace")
    return text[text.rfind("celery@") :] if "celery@" in text else text
