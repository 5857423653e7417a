"""Helpers for the reliability suite: stacks with quick recovery settings, bulk submit and checks.

The real processes come from ``tests/fixtures/stack.py`` (API, Celery worker with the embedded
sweeper), ``tests/fixtures/triton.py`` (the session Triton) and ``tests/fixtures/receiver.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from moderation.db import make_engine, make_session_factory, session_scope
from moderation.models import CallbackDelivery, Submission, Verdict
from tests.e2e.conftest import image_bytes
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import FINAL, Stack

# The sweeper runs every 2 s and re-enqueues a job whose row has not moved for 8 s.
FAULT_ENV = {
    "DFMOD_CALLBACK_TIMEOUT_S": "2",
    "DFMOD_FETCH_TIMEOUT_S": "5",
    "DFMOD_SWEEP_INTERVAL_S": "2",
    "DFMOD_STUCK_AFTER_S": "8",
}


def submit_many(stack: Stack, api_key: str, count: int, *, callback_url: str | None) -> list[str]:
    """Submits ``count`` distinct images; returns their ids (every answer must be 202)."""
    ids = []
    fields = {"callback_url": callback_url} if callback_url else {}
    for seed in range(count):
        data = image_bytes((48, 48), seed=1000 + seed)
        response = stack.submit_file(api_key, data, headers=None, **fields)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def submit_stream(
    stack: Stack, api_key: str, count: int, callback_url: str, *, first_seed: int = 1000
) -> list[str]:
    """Submits ``count`` distinct images over its own HTTP session (safe from a background
    thread, and whether or not the worker is alive: ``Stack.submit_file`` refuses once a process
    died); every answer must be 202. Returns the ids."""
    ids: list[str] = []
    with requests.Session() as http:
        for seed in range(first_seed, first_seed + count):
            response = http.post(
                f"{stack.api_url}/v1/submissions",
                files={"file": ("m.png", image_bytes((48, 48), seed=seed))},
                data={"callback_url": callback_url},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=30,
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    return ids


def statuses(stack: Stack, api_key: str, ids: list[str]) -> dict[str, str]:
    """Returns each submission's status, read over the API."""
    return {i: stack.get(api_key, i).json()["status"] for i in ids}


def wait_all_final(stack: Stack, api_key: str, ids: list[str], *, timeout_s: float) -> dict:
    """Returns {id: body} once every submission reached an end state; fails with logs on timeout."""
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for submission_id in [i for i in ids if i not in done]:
            body = stack.get(api_key, submission_id).json()
            if body["status"] in FINAL:
                done[submission_id] = body
        if len(done) == len(ids):
            return done
        time.sleep(0.5)
    raise AssertionError(
        f"{len(ids) - len(done)} of {len(ids)} not final after {timeout_s}s\n{stack.log_tail()}"
    )


def wait_some_final(
    stack: Stack, api_key: str, ids: list[str], count: int, timeout_s: float
) -> int:
    """Returns once at least ``count`` of ``ids`` are final (mid-load marker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        final = sum(1 for s in statuses(stack, api_key, ids).values() if s in FINAL)
        if final >= count:
            return final
        time.sleep(0.3)
    raise AssertionError(f"fewer than {count} final after {timeout_s}s\n{stack.log_tail()}")


def rows_per_submission(database_url: str, model: Any, ids: list[str]) -> dict[str, int]:
    """Returns how many rows of ``model`` (Verdict, CallbackDelivery) each submission has."""
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine), read_only=True) as session:
            query = (
                select(model.submission_id, func.count())
                .where(model.submission_id.in_(ids))
                .group_by(model.submission_id)
            )
            counts = {row[0]: row[1] for row in session.execute(query)}
    finally:
        engine.dispose()
    return {i: int(counts.get(i, 0)) for i in ids}


def assert_exactly_once(stack: Stack, ids: list[str], *, with_callbacks: bool) -> None:
    """One verdict row (and one outbox row) per submission: nothing lost, nothing twice."""
    verdicts = rows_per_submission(stack.database_url, Verdict, ids)
    assert set(verdicts.values()) == {1}, {i: c for i, c in verdicts.items() if c != 1}
    if with_callbacks:
        outbox = rows_per_submission(stack.database_url, CallbackDelivery, ids)
        assert set(outbox.values()) == {1}, {i: c for i, c in outbox.items() if c != 1}


def webhook_ids_by_submission(receiver: CallbackReceiver) -> dict[str, set[str]]:
    """Returns the webhook-id headers seen for each submission id (from the signed bodies)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for item in receiver.received:
        assert item.signature_ok, item.headers
        seen[item.json()["data"]["id"]].add(item.headers["webhook-id"])
    return seen


def wait_callbacks_for(receiver: CallbackReceiver, ids: list[str], *, timeout_s: float) -> None:
    """Returns once every submission in ``ids`` has had a callback (a lost worker's callbacks
    are sent again once their attempt's hold lapses, by the sweeper or any worker's heartbeat)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        missing = set(ids) - set(webhook_ids_by_submission(receiver))
        if not missing:
            return
        time.sleep(0.5)
    raise AssertionError(f"no callback after {timeout_s}s for {sorted(missing)[:5]}")


def unfinished_leases(stack: Stack) -> dict[str, str | None]:
    """Returns {id: lease owner} of the submissions not finished yet."""
    engine = make_engine(stack.database_url)
    try:
        with session_scope(make_session_factory(engine), read_only=True) as session:
            rows = session.execute(
                select(Submission.id, Submission.lease_owner).where(Submission.status.not_in(FINAL))
            )
            return {row.id: row.lease_owner for row in rows}
    finally:
        engine.dispose()


def held_by(stack: Stack, pid: int) -> list[str]:
    """Returns the unfinished submissions leased by the worker whose main process is ``pid``."""
    return [
        i for i, owner in unfinished_leases(stack).items() if owner and owner.endswith(f":{pid}")
    ]


def wait_holding(stack: Stack, pid: int, *, timeout_s: float = 60.0) -> None:
    """Returns once the worker holds a lease (so the kill lands on work in flight)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if held_by(stack, pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"the worker held no job for {timeout_s}s\n{stack.log_tail()}")


def descendants(pid: int) -> list[int]:
    """Returns the ids of every process below ``pid`` (from /proc), deepest last."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            found.extend(children)
            queue.extend(children)
    return found


def kill_holding(stack: Stack, pid: int, *, timeout_s: float = 60.0) -> list[str]:
    """SIGKILLs the worker ``pid`` (and its children) while it holds leases; returns them.

    The worker is frozen (SIGSTOP) before its leases are read, so it cannot finish the jobs
    between the look and the kill; if it held none at that instant it runs on and is tried again.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        wait_holding(stack, pid, timeout_s=max(0.1, deadline - time.monotonic()))
        tree = [pid, *descendants(pid)]
        for target in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGSTOP)
        held = held_by(stack, pid)
        if held:
            kill_tree(pid)
            return held
        for target in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGCONT)
    raise AssertionError(f"the worker held no job at any look for {timeout_s}s")


def kill_tree(pid: int) -> None:
    """Sends SIGKILL to a process and everything it started (no clean-up runs anywhere)."""
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


def wait_worker_ready(
    stack: Stack, *, timeout_s: float = 60.0, log: str = "worker.log", count: int = 1
) -> None:
    """Returns once the worker logged Celery's ``ready.`` (its queues are declared by then);
    ``count``: how many times (a restarted worker appends to the same log).

    ``Stack.start`` returns when the API answers, which can be before the worker declared its
    queues; on the SQLite broker the API's first publish then races that declaration, can fail
    with a unique-constraint error, and leaves the submission to the sweeper.
    """
    path = stack.root / log
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stack._check_alive()
        text = path.read_text(errors="replace") if path.exists() else ""
        if len(re.findall(r"\S+@\S+ ready\.", text)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"the worker did not log ready within {timeout_s}s\n{stack.log_tail()}")


# A media_url that never finishes (tests of the fetch limit and of task time limits).
BYTE_EVERY_S = 0.5
TRICKLE_FOR_S = 120.0  # the server's own bound: far beyond any limit under test


class TrickleServer:
    """Answers every GET with a PNG header and then one byte per BYTE_EVERY_S, never ending."""

    def __init__(self) -> None:
        self.requests: list[float] = []  # monotonic time each request arrived
        self.hung_up: list[float] = []  # monotonic time the client was seen gone
        self.sent: list[int] = []  # body bytes sent per request
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                sent, until = 0, time.monotonic() + TRICKLE_FOR_S
                try:
                    while time.monotonic() < until and not server._stop.is_set():
                        self.wfile.write(b"\x89")
                        self.wfile.flush()
                        sent += 1
                        time.sleep(BYTE_EVERY_S)
                except OSError:  # the client closed the connection
                    server.hung_up.append(time.monotonic())
                finally:
                    server.sent.append(sent)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/slow.png"

    def wait_hung_up(self, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while not self.hung_up and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.hung_up, f"the worker still reads the trickle after {timeout_s}s"
        return self.hung_up[0]

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer()
    try:
        yield server
    finally:
        server.stop()
