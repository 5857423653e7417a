"""Worker killed with SIGKILL mid-batch, with the DEFAULT recovery settings, on both brokers.

Recovery mechanism (``worker.leases``): the worker leases every job whose message it holds
(prefetched or running) and renews the leases from a heartbeat; when it dies they lapse after
``DFMOD_LEASE_S`` (15 s) and the next heartbeat of any worker, or of the restarted one, re-enqueues
them. Neither ``DFMOD_STUCK_AFTER_S`` (300 s) nor Redis's visibility timeout is lowered here.
Idempotent scoring and claimed callback attempts keep it exactly-once in the database.

The bounds checked are the service's promise: the jobs the killed worker held end at most 30 s
after a restarted worker is ready, or at most 60 s after the kill when another worker runs on.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from moderation.models import Submission
from tests.fixtures.processes import kill_holding
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import (
    Stack,
    assert_exactly_once,
    embedded_stack,
    pg_redis_stack,
    submit_stream,
    triton_env,
    wait_all_final,
    wait_callbacks_for,
    wait_worker_ready,
    webhook_ids_by_submission,
)

pytestmark = pytest.mark.integration

SUBMISSIONS = 160
CLIENTS = 4  # enough that the worker holds a backlog when it is killed
RESTART_BOUND_S = 30.0
SURVIVOR_BOUND_S = 60.0
# Only the callback deadline is shortened (the receiver is local); recovery runs on defaults.
KILL_ENV = {"DFMOD_CALLBACK_TIMEOUT_S": "2"}


@pytest.fixture(params=["embedded", "pg-redis"])
def stack(
    request: pytest.FixtureRequest,
    triton_server: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    env = {**triton_env(triton_server), **KILL_ENV}
    root = tmp_path_factory.mktemp(f"fault-kill-{request.param}")
    if request.param == "embedded":
        made = embedded_stack(root, env)
    else:
        made = pg_redis_stack(
            root,
            env,
            postgres_url=request.getfixturevalue("postgres_url"),
            redis_url=request.getfixturevalue("redis_url"),
        )
    with made as started:
        wait_worker_ready(started)
        yield started


def _completed(stack: Stack, ids: list[str]) -> dict[str, dt.datetime]:
    with stack.session(read_only=True) as session:
        rows = session.execute(
            select(Submission.id, Submission.completed_at).where(Submission.id.in_(ids))
        )
        return {row.id: row.completed_at for row in rows}


@dataclass(frozen=True)
class Killed:
    """What a kill left: every id submitted, those the killed worker held, when, the API key."""

    ids: list[str]
    held: list[str]
    at: dt.datetime
    api_key: str


def _kill_mid_stream(stack: Stack, receiver: CallbackReceiver, worker: str) -> Killed:
    """Streams submissions and SIGKILLs ``worker`` (and its children) once callbacks flow."""
    tenant = stack.tenant()
    receiver.secret = tenant.secret
    per_client = SUBMISSIONS // CLIENTS
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        streams = [
            pool.submit(
                submit_stream,
                stack,
                tenant.api_key,
                per_client,
                receiver.url(),
                first_seed=1000 + n * per_client,
            )
            for n in range(CLIENTS)
        ]
        receiver.wait_for(10, timeout_s=90)
        process = stack.procs.pop(worker)
        held = kill_holding(stack, process.pid)  # frozen, looked at, then killed
        process.wait(timeout=10)
        killed_at = dt.datetime.now(dt.timezone.utc)
        ids = [i for stream in streams for i in stream.result(timeout=180)]
    assert held, "the killed worker held no job; the test proves nothing"
    return Killed(ids, held, killed_at, tenant.api_key)


def _check_once(stack: Stack, receiver: CallbackReceiver, killed: Killed) -> None:
    ids = killed.ids
    finals = wait_all_final(stack, killed.api_key, ids, timeout_s=240)
    assert {b["status"] for b in finals.values()} <= {"auto_passed", "auto_flagged", "needs_review"}
    assert_exactly_once(stack, ids, with_callbacks=True)
    wait_callbacks_for(receiver, ids, timeout_s=180)
    seen = webhook_ids_by_submission(receiver)
    assert set(seen) == set(ids)
    assert all(len(webhook_ids) == 1 for webhook_ids in seen.values()), seen


def test_worker_sigkill_then_restart__held_jobs_end_within_30s_of_ready(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    killed = _kill_mid_stream(stack, callback_receiver, "worker")
    stack._spawn("worker", "worker", *stack.worker_args)
    wait_worker_ready(stack, count=2, timeout_s=90)
    ready_at = dt.datetime.now(dt.timezone.utc)
    _check_once(stack, callback_receiver, killed)
    last = max(_completed(stack, killed.held).values())
    late = last - ready_at
    print(
        f"\nworker kill + restart ({stack.name}): {len(killed.held)} jobs held by the killed "
        f"worker; ready {(ready_at - killed.at).total_seconds():.1f}s after the kill; the last "
        f"held job ended {late.total_seconds():.1f}s after ready, "
        f"{(last - killed.at).total_seconds():.1f}s after the kill"
    )
    assert late.total_seconds() <= RESTART_BOUND_S


def test_worker_sigkill_other_running__held_jobs_end_within_60s(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    stack._spawn("worker2", "worker", "--concurrency", "2", *_pool_args(stack))
    wait_worker_ready(stack, log="worker2.log", count=1)
    killed = _kill_mid_stream(stack, callback_receiver, "worker")
    _check_once(stack, callback_receiver, killed)
    late = max(_completed(stack, killed.held).values()) - killed.at
    print(
        f"\nworker kill, another running ({stack.name}): {len(killed.held)} jobs held by the "
        f"killed worker; the last ended {late.total_seconds():.1f}s after the kill"
    )
    assert late.total_seconds() <= SURVIVOR_BOUND_S


def _pool_args(stack: Stack) -> tuple[str, ...]:
    args = stack.worker_args
    return tuple(args[args.index("--pool") : args.index("--pool") + 2]) if "--pool" in args else ()
