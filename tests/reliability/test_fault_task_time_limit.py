"""Task time limits on the production stack: a task past its soft limit ends its submission.

The prefork pool (PostgreSQL + Redis) enforces Celery's limits. Here the fetch's own limit is far
away (60 s) and the task's soft limit is 2 s, so only the task limit can end a fetch of a
``media_url`` that trickles forever (:class:`TrickleServer`). The submission must end ``failed``
/ ``fetch_failed`` saying it ran past the task time limit, promptly and without retries, and the
same worker process pool must go on scoring.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.database import fresh_postgres_database
from tests.fixtures.media import image_bytes
from tests.fixtures.receiver import TrickleServer
from tests.fixtures.stack import FAULT_ENV, Stack, pg_redis_stack, triton_env, wait_worker_ready

pytestmark = pytest.mark.integration

SOFT_LIMIT_S = 2.0


@pytest.fixture()
def stack(triton_server: object, tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    env = {
        **triton_env(triton_server),
        **FAULT_ENV,
        "DFMOD_FETCH_TIMEOUT_S": "60",  # far beyond the task limit: only the task limit ends it
        "DFMOD_TASK_SOFT_TIME_LIMIT_S": str(SOFT_LIMIT_S),
        "DFMOD_TASK_TIME_LIMIT_S": str(SOFT_LIMIT_S + 5),
        "DFMOD_OUTBOUND_ALLOWLIST": "127.0.0.1/32",
        "DFMOD_STUCK_AFTER_S": "60",  # the sweeper does not step in during the test
    }
    with (
        fresh_postgres_database() as database_url,
        pg_redis_stack(
            tmp_path / "stack", env, postgres_url=database_url, redis_url=redis_url
        ) as started,
    ):
        wait_worker_ready(started)
        yield started


def test_fetch_past_the_soft_time_limit__failed_with_reason__pool_keeps_serving(
    stack: Stack, trickle: TrickleServer
) -> None:
    key = stack.tenant().api_key
    response = stack.submit_url(key, trickle.url())
    assert response.status_code == 202, response.text
    submitted = time.monotonic()
    body = stack.wait_final(key, response.json()["id"], timeout_s=45)
    failed_after_s = time.monotonic() - submitted
    assert body["status"] == "failed", body
    assert body["failure"]["reason"] == "fetch_failed", body
    assert "task time limit" in body["failure"]["detail"], body
    assert len(trickle.requests) == 1, "a task past its time limit must not be retried"
    hung_up_s = trickle.wait_hung_up(timeout_s=10) - trickle.requests[0]
    after = stack.submit_file(key, image_bytes(seed=77))
    assert after.status_code == 202, after.text
    scored = stack.wait_final(key, after.json()["id"], timeout_s=60)
    assert scored["status"] in {"auto_passed", "auto_flagged", "needs_review"}, scored
    print(
        f"\ntask time limit: soft limit {SOFT_LIMIT_S:g}s, fetch limit 60s; failed "
        f"{failed_after_s:.1f}s after submitting ({body['failure']['detail']!r}); worker hung up "
        f"{hung_up_s:.1f}s after the request; next upload scored"
    )
