"""Triton refuses overload with its bounded queue; the worker retries and every submission scores.

A private Triton serves a copy of the committed repository with the queue cut to
``max_queue_size: 1`` and a single model instance, so a third concurrent request is refused at
once. The worker runs :data:`WORKER_THREADS` threads and gets a burst of animated-GIF videos (32
frames, 24 of them sampled: one Triton request of 24 images per video), so several requests arrive
while the instance is busy. The client's own retries are off (``DFMOD_TRITON_RETRIES=0``): every
refusal surfaces as a task retry on ``DFMOD_SCORE_RETRY_SCHEDULE`` (the client's retries are
covered by ``tests/serving/test_overload.py``). The test proves refusals happened from the worker's
retry log lines carrying Triton's own answer (``[StatusCode.UNAVAILABLE] ... Exceeds maximum queue
size``; Triton 2.51 counts these refusals neither in ``nv_inference_request_failure`` nor in the
model statistics' ``fail``) and that none of them ended a submission ``failed``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from moderation import contract
from serving.server import TritonServer
from tests.fixtures.stack import (
    FAULT_ENV,
    Stack,
    assert_exactly_once,
    embedded_stack,
    triton_env,
    wait_all_final,
    wait_worker_ready,
)
from tests.fixtures.triton import private_server
from tests.video.media import animated

pytestmark = pytest.mark.integration

QUEUE = 1
WORKER_THREADS = 8
VIDEOS = 16
FRAMES = 32
# 20 retries, 41.5 s in all: far more than the burst needs to drain through one instance.
RETRY_SCHEDULE = "0.5,1,1,1" + ",2" * 16
ENV = {
    **FAULT_ENV,
    "DFMOD_TRITON_RETRIES": "0",
    "DFMOD_SCORE_RETRY_SCHEDULE": RETRY_SCHEDULE,
    "DFMOD_STUCK_AFTER_S": "60",  # the retries, not the sweeper, carry the burst
}
# One per refusal: worker/tasks.py's retry line with the error Triton answered.
REFUSED = re.compile(r"retry \d+ of (\S+) in [\d.]+s: .*Exceeds maximum queue size")


def overloadable(config: str) -> str:
    """Returns the committed config with a queue of QUEUE and a single instance."""
    config, queues = re.subn(r"max_queue_size: \d+", f"max_queue_size: {QUEUE}", config)
    config, counts = re.subn(r"(instance_group \[\s*\{\s*count: )\d+", r"\g<1>1", config)
    assert (queues, counts) == (1, 1), "config.pbtxt layout changed: queue or instance count"
    return config


@pytest.fixture()
def small_triton(tmp_path: Path) -> Iterator[TritonServer]:
    def prepare(repository: Path) -> None:
        config = repository / contract.MODEL_NAME / "config.pbtxt"
        config.write_text(overloadable(config.read_text()))

    with private_server(tmp_path / "triton", prepare=prepare) as server:
        yield server


@pytest.fixture()
def stack(small_triton: TritonServer, tmp_path: Path) -> Iterator[Stack]:
    env = {**triton_env(small_triton), **ENV}
    unstarted = embedded_stack(tmp_path / "stack", env)
    unstarted.worker_args = ("--beat", "--concurrency", str(WORKER_THREADS))
    with unstarted as started:
        wait_worker_ready(started)
        yield started


def video(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return animated([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(FRAMES)])


def test_overload_burst__refused_then_retried__all_scored(
    stack: Stack,
) -> None:
    key = stack.tenant().api_key
    burst = [video(seed) for seed in range(VIDEOS)]
    sent_at = time.monotonic()
    ids = []
    for data in burst:
        response = stack.submit_file(key, data, filename="clip.gif")
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    finals = wait_all_final(stack, key, ids, timeout_s=75)
    took_s = time.monotonic() - sent_at
    log = (stack.root / "worker.log").read_text(errors="replace")
    retried = [m.group(1) for m in REFUSED.finditer(log)]
    assert retried, f"Triton refused nothing; the test proves nothing\n{stack.log_tail()}"
    assert set(retried) <= set(ids)
    assert [b["status"] for b in finals.values() if b["status"] == "failed"] == [], finals
    assert all(b["verdict"] and b["verdict"]["video"] for b in finals.values()), finals
    assert_exactly_once(stack, ids, with_callbacks=False)
    print(
        f"\noverload: {VIDEOS} videos of {FRAMES} frames, {WORKER_THREADS} worker threads, "
        f"queue {QUEUE}, 1 instance; Triton refused {len(retried)} requests, each a task "
        f"retry, over {len(set(retried))} submissions (most for one: "
        f"{max(retried.count(i) for i in set(retried))}); all {VIDEOS} scored in {took_s:.1f}s, "
        "0 failed, 1 verdict each"
    )
