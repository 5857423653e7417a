"""Leases on in-flight jobs: held while renewed, taken back once when lapsed, orphans found."""

from __future__ import annotations

import datetime as dt
import threading
import time

from moderation.db import session_scope
from moderation.models import MediaKind, Status, Submission, utcnow
from tests.fixtures.media import flat_image
from tests.fixtures.worker import StubClient, WorkerEnv, score, submission_row
from worker import leases, scoring, sweeper


def _set(env: WorkerEnv, sub_id: str, **fields: object) -> None:
    with session_scope(env.session_factory) as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        for name, value in fields.items():
            setattr(sub, name, value)


def _ago(seconds: float) -> dt.datetime:
    return utcnow() - dt.timedelta(seconds=seconds)


def test_hold__leases_held_ids_and_renews_them(worker_env: WorkerEnv) -> None:
    sub_id = worker_env.submission(status=Status.QUEUED)
    done = worker_env.submission(status=Status.AUTO_PASSED)
    assert (
        leases.hold(
            session_factory=worker_env.session_factory,
            ids=[sub_id, done],
            settings=worker_env.settings,
        )
        == 1
    )
    first = submission_row(worker_env, sub_id)
    assert first.lease_owner == leases.owner() and first.lease_expires_at is not None
    assert first.lease_expires_at > utcnow() + dt.timedelta(seconds=worker_env.settings.lease_s - 2)
    leases.hold(
        session_factory=worker_env.session_factory, ids=[sub_id], settings=worker_env.settings
    )
    assert submission_row(worker_env, sub_id).updated_at == first.updated_at  # not a change


def test_hold__leaves_a_live_lease_of_another_worker(worker_env: WorkerEnv) -> None:
    sub_id = worker_env.submission(status=Status.SCORING)
    _set(
        worker_env,
        sub_id,
        lease_owner="other:1",
        lease_expires_at=utcnow() + dt.timedelta(seconds=9),
    )
    assert (
        leases.hold(
            session_factory=worker_env.session_factory, ids=[sub_id], settings=worker_env.settings
        )
        == 0
    )
    assert submission_row(worker_env, sub_id).lease_owner == "other:1"


def test_score__a_job_leased_by_a_live_worker_is_not_scored_twice(scoring_env: WorkerEnv) -> None:
    worker_env = scoring_env
    sha = worker_env.blobs.put(flat_image((64, 48)))
    sub_id = worker_env.submission(status=Status.SCORING, blob_sha256=sha)
    _set(
        worker_env,
        sub_id,
        lease_owner="other:1",
        lease_expires_at=utcnow() + dt.timedelta(seconds=9),
    )
    client = StubClient()
    assert score(worker_env, sub_id, client).outcome is scoring.Outcome.NOOP
    assert client.calls == 0
    _set(worker_env, sub_id, lease_expires_at=_ago(1))  # the other worker stopped renewing
    result = score(worker_env, sub_id, client)
    assert result.outcome is scoring.Outcome.SCORED and client.calls == 1
    row = submission_row(worker_env, sub_id)
    assert (row.lease_owner, row.lease_expires_at) == (None, None)  # cleared with the verdict


def test_reclaim__lapsed_leases_are_returned_once(worker_env: WorkerEnv) -> None:
    upload = worker_env.submission(status=Status.SCORING, blob_sha256="a" * 64)
    url = worker_env.submission(
        media_kind=MediaKind.URL, media_url="http://x/a.png", status=Status.FETCHING
    )
    live = worker_env.submission(status=Status.SCORING, blob_sha256="b" * 64)
    for sub_id in (upload, url):
        _set(worker_env, sub_id, lease_owner="dead:1", lease_expires_at=_ago(1))
    _set(
        worker_env, live, lease_owner="alive:1", lease_expires_at=utcnow() + dt.timedelta(seconds=9)
    )
    jobs = {j.submission_id: j for j in leases.reclaim(session_factory=worker_env.session_factory)}
    assert set(jobs) >= {upload, url} and live not in jobs
    assert not jobs[upload].needs_fetch and jobs[url].needs_fetch
    assert submission_row(worker_env, upload).lease_owner is None
    again = leases.reclaim(session_factory=worker_env.session_factory)
    assert not {j.submission_id for j in again} & {upload, url}


def test_sweep__reclaims_lapsed_leases_and_leaves_live_ones_to_their_worker(
    worker_env: WorkerEnv,
) -> None:
    lapsed = worker_env.submission(status=Status.SCORING, blob_sha256="c" * 64)
    live = worker_env.submission(status=Status.SCORING, blob_sha256="d" * 64)
    _set(worker_env, lapsed, lease_owner="dead:1", lease_expires_at=_ago(1))
    old = _ago(worker_env.settings.stuck_after_s + 60)  # a long job: older than stuck_after_s
    _set(
        worker_env,
        live,
        lease_owner="alive:1",
        lease_expires_at=utcnow() + dt.timedelta(seconds=9),
        updated_at=old,
    )
    result = sweeper.sweep(session_factory=worker_env.session_factory, settings=worker_env.settings)
    assert lapsed in result.score and live not in result.score


def test_hand_back__a_scheduled_retry_is_due_a_lease_after_its_time(worker_env: WorkerEnv) -> None:
    sub_id = worker_env.submission(status=Status.SCORING)
    _set(worker_env, sub_id, lease_owner=leases.owner(), lease_expires_at=utcnow())
    leases.hand_back(
        session_factory=worker_env.session_factory,
        submission_id=sub_id,
        due_in_s=60,
        settings=worker_env.settings,
    )
    row = submission_row(worker_env, sub_id)
    assert row.lease_owner is None
    assert row.lease_expires_at is not None and row.lease_expires_at > utcnow() + dt.timedelta(
        seconds=60
    )


def test_orphans__only_rows_beyond_what_the_broker_holds_oldest_first(
    worker_env: WorkerEnv,
) -> None:
    ids = [worker_env.submission(status=Status.QUEUED) for _ in range(3)]
    for age, sub_id in zip((300, 200, 100), ids, strict=True):
        _set(worker_env, sub_id, updated_at=_ago(age))
    fresh = worker_env.submission(status=Status.QUEUED)  # its message may be on its way
    factory, settings = worker_env.session_factory, worker_env.settings
    assert leases.orphans(session_factory=factory, settings=settings, waiting_in_broker=10) == []
    found = leases.orphans(session_factory=factory, settings=settings, waiting_in_broker=2)
    assert [j.submission_id for j in found] == [ids[0]]
    rest = {
        j.submission_id
        for j in leases.orphans(session_factory=factory, settings=settings, waiting_in_broker=0)
    }
    assert rest >= {ids[1], ids[2]} and fresh not in rest and ids[0] not in rest


def test_redis_visibility_timeout_outlasts_every_wait_of_a_live_worker(
    worker_env: WorkerEnv,
) -> None:
    """A live worker's message (a countdown, then a run up to the hard limit) is never handed to
    another worker by Redis; recovery from a dead one is the leases' (15 s + a heartbeat)."""
    from worker import callbacks
    from worker.celery_app import _transport_options, redis_visibility_timeout_s
    from worker.tasks import DATABASE_RETRY_DELAYS, INTERNAL_RETRY_DELAYS

    settings = worker_env.settings
    timeout = redis_visibility_timeout_s(settings)
    longest = max(
        callbacks.MAX_COUNTDOWN_S,
        *settings.score_retry_delays,
        *INTERNAL_RETRY_DELAYS,
        *DATABASE_RETRY_DELAYS,
    )
    assert timeout >= longest + settings.task_time_limit_s + settings.lease_s
    assert _transport_options("redis://h:6379/0", settings) == {"visibility_timeout": timeout}
    assert _transport_options("sqla+sqlite:///x.db", settings) == {}


def test_heartbeat__a_received_message_is_leased_unless_a_pool_process_started_it(
    worker_env: WorkerEnv,
) -> None:
    """Between renewals the heartbeat leases messages just received; one a pool process has
    started (reported to the main process, under prefork) is left to its own claim: one UPDATE
    of the row, not two."""
    waiting, started = (
        worker_env.submission(status=Status.QUEUED),
        worker_env.submission(status=Status.QUEUED),
    )
    held: set[str] = set()
    renewed = threading.Event()
    beat = leases.Heartbeat(
        session_factory=worker_env.session_factory,
        settings=worker_env.settings,
        held=lambda: set(held),
        requeue=lambda _jobs: renewed.set(),  # after the first renewal, which holds nothing
        waiting=lambda: None,
        started=lambda: {started},
    )
    assert beat.interval_s >= 5  # the next renewal (which leases every held id) is far off
    beat.start()
    try:
        assert renewed.wait(10)
        held.update({waiting, started})
        beat.wake()
        deadline = time.monotonic() + 10
        while submission_row(worker_env, waiting).lease_owner is None:
            assert time.monotonic() < deadline, "the received message was not leased"
            time.sleep(0.05)
        assert submission_row(worker_env, started).lease_owner is None
    finally:
        beat.stop()
