"""The tasks' retry policy: every accepted job reaches an end state, with the right reason.

Tasks run in-process with ``Task.apply`` (Celery runs retries inline there); the broker is an
SQLite file nobody consumes, so follow-up tasks are only queued.
"""

from __future__ import annotations

import pytest

from moderation.models import Status
from tests.fixtures.media import flat_image
from tests.fixtures.stack import closed_port
from tests.fixtures.worker import WorkerEnv, submission_row
from worker.celery_app import create_celery
from worker.enqueue import TASK_SCORE
from worker.tasks import INTERNAL_RETRY_DELAYS, register_tasks


def _run_score(env: WorkerEnv, submission_id: str, **settings: object) -> str:
    app = register_tasks(create_celery(env.settings.replace(**settings)))
    result = app.tasks[TASK_SCORE].apply(args=[submission_id])
    return str(result.result)


def test_score_task__unexpected_error__internal_error_after_retries(worker_env: WorkerEnv) -> None:
    missing_blob = "0" * 64  # the row points at bytes that are not stored
    sub_id = worker_env.submission(blob_sha256=missing_blob)
    assert _run_score(worker_env, sub_id) == "failed"
    sub = submission_row(worker_env, sub_id)
    assert (sub.status, sub.failure_reason) == (Status.FAILED, "internal_error")
    assert f"gave up after {len(INTERNAL_RETRY_DELAYS) + 1} attempts" in (sub.failure_detail or "")


@pytest.mark.integration
def test_score_task__triton_down__inference_unavailable_after_schedule(
    worker_env: WorkerEnv,
) -> None:
    sub_id = worker_env.submission(blob_sha256=worker_env.blobs.put(flat_image((64, 48))))
    outcome = _run_score(
        worker_env,
        sub_id,
        triton_grpc_port=closed_port(),
        triton_retries=0,
        triton_timeout_s=1.0,
        score_retry_schedule="0,0",
    )
    assert outcome == "failed"
    sub = submission_row(worker_env, sub_id)
    assert (sub.status, sub.failure_reason) == (Status.FAILED, "inference_unavailable")
    assert "gave up after 3 attempts" in (sub.failure_detail or "")
    assert sub.attempts == 3
