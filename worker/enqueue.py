"""Sending work to the worker by task name: the one module the API (and anything outside
``worker/``) uses to enqueue.

It knows the task names and how to publish, not the task code: importing it imports no task,
Triton or database module; :func:`publisher` builds the Celery app on first use.
"""

from __future__ import annotations

import logging
from typing import Any

from moderation.settings import Settings

logger = logging.getLogger(__name__)

TASK_SCORE = "dfmod.score_submission"
TASK_FETCH = "dfmod.fetch_media"
TASK_DELIVER = "dfmod.deliver_callback"
TASK_SWEEP = "dfmod.sweep"
TASK_NAMES = (TASK_SCORE, TASK_FETCH, TASK_DELIVER, TASK_SWEEP)

# Publishing must not hang a request when the broker is down: a few quick retries, then give up.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


def publisher(settings: Settings) -> Any:
    """Returns a Celery app that can send dfmod's tasks by name (its tasks are not bound)."""
    from worker.celery_app import create_celery

    return create_celery(settings)


def _reprs(item_id: str) -> dict[str, str]:
    """Returns the message's ``argsrepr`` and ``kwargsrepr`` (shown by monitoring tools): given,
    Celery does not build them with its ``saferepr``, a fifth of a publish's CPU for one id."""
    return {"argsrepr": repr([item_id]), "kwargsrepr": "{}"}


def publish(app: Any, name: str, item_id: str) -> None:
    """Sends one task by name, retrying the broker briefly; raises when it cannot publish."""
    app.send_task(
        name, args=[item_id], retry=True, retry_policy=PUBLISH_RETRY_POLICY, **_reprs(item_id)
    )


def enqueue(app: Any, name: str, item_id: str, *, countdown: float | None = None) -> None:
    """Sends one task by name (countdown in seconds), logging instead of raising on failure."""
    try:
        app.send_task(name, args=[item_id], countdown=countdown, **_reprs(item_id))
    except Exception:  # the sweeper re-enqueues from the database
        logger.exception("could not enqueue %s(%s); the sweeper will retry", name, item_id)
