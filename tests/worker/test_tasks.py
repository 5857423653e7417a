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
from worker.tasks import DATABASE_RETRY_DELAYS, INTERNAL_RETRY_DELAYS, register_tasks


def _run_score(env: WorkerEnv, submission_id: str, **settings: object) -> str:
    app = register_tasks(create_celery(env.settings.replace(**settings)))
    result = app.tasks[TASK_SCORE].apply(args=[submission_id])
    return str(result.result)


def _run_score_without_triton(env: WorkerEnv, submission_id: str, *, retry_schedule: str) -> str:
    """Runs the score task against a closed Triton port, failing fast, on ``retry_schedule``."""
    return _run_score(
        env,
        submission_id,
        triton_grpc_port=closed_port(),
        triton_retries=0,
        triton_timeout_s=1.0,
        score_retry_schedule=retry_schedule,
    )


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
    outcome = _run_score_without_triton(worker_env, sub_id, retry_schedule="0,0")
    assert outcome == "failed"
    sub = submission_row(worker_env, sub_id)
    assert (sub.status, sub.failure_reason) == (Status.FAILED, "inference_unavailable")
    assert "gave up after 3 attempts" in (sub.failure_detail or "")
    assert sub.attempts == 3


def test_score_task__database_unreachable__sent_again_without_using_up_its_tries(
    worker_env: WorkerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from worker import scoring

    sub_id = worker_env.submission(blob_sha256=worker_env.blobs.put(flat_image((64, 48))))
    real = scoring.score_submission
    refusals = len(DATABASE_RETRY_DELAYS) + 2  # more than the schedule: its last delay repeats

    def refused_at_first(**kwargs: object) -> scoring.ScoreResult:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise OperationalError("UPDATE submissions ...", {}, ConnectionError("refused"))
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring, "score_submission", refused_at_first)
    # Once the database answers, Triton (closed here) is unavailable: the job then gets the whole
    # inference schedule (two tries), which the database's refusals must not have used up.
    outcome = _run_score_without_triton(worker_env, sub_id, retry_schedule="0")
    assert refusals == 0 and outcome == "failed"
    sub = submission_row(worker_env, sub_id)
    assert (sub.status, sub.failure_reason) == (Status.FAILED, "inference_unavailable")
    assert "gave up after 2 attempts" in (sub.failure_detail or ""), sub.failure_detail
    assert sub.attempts == 2  # claims: none while the database refused
