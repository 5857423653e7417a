"""Media fetches against a real HTTP server on 127.0.0.1: limits, redirects, SSRF, sniffing."""

from __future__ import annotations

import pytest

from moderation.models import MediaKind, Status
from tests.fixtures.media import flat_image
from tests.fixtures.receiver import CallbackReceiver, Media
from tests.fixtures.worker import WorkerEnv, submission_row
from worker import fetch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fetch(env: WorkerEnv, url: str, **settings: object) -> tuple[fetch.FetchResult, str]:
    sub_id = env.submission(media_kind=MediaKind.URL, media_url=url, status=Status.QUEUED)
    result = fetch.fetch_media(
        submission_id=sub_id,
        session_factory=env.session_factory,
        blobs=env.blobs,
        settings=env.settings.replace(**settings),
    )
    return result, sub_id


def test_fetch_media__stores_blob_and_queues(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    data = flat_image((64, 48))
    receiver.files["/a.png"] = Media(data, "image/png")
    result, sub_id = _fetch(worker_env, receiver.url("/a.png"))
    assert result.outcome is fetch.FetchOutcome.STORED
    sub = submission_row(worker_env, sub_id)
    assert sub.status == Status.QUEUED and sub.size_bytes == len(data)
    assert sub.blob_sha256 is not None and worker_env.blobs.get(sub.blob_sha256) == data
    again = fetch.fetch_media(
        submission_id=sub_id,
        session_factory=worker_env.session_factory,
        blobs=worker_env.blobs,
        settings=worker_env.settings,
    )
    assert again.outcome is fetch.FetchOutcome.STORED  # already stored: ready, nothing refetched


def test_fetch_media__follows_redirect_on_loopback(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    receiver.files["/a.png"] = Media(flat_image((64, 48)), "image/png")
    receiver.files["/r1"] = Media(redirect_to="/a.png")
    result, _ = _fetch(worker_env, receiver.url("/r1"))
    assert result.outcome is fetch.FetchOutcome.STORED


def test_fetch_media__too_many_redirects__fail(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    receiver.files["/loop"] = Media(redirect_to="/loop")
    result, sub_id = _fetch(worker_env, receiver.url("/loop"))
    assert result.outcome is fetch.FetchOutcome.FAILED
    sub = submission_row(worker_env, sub_id)
    assert (sub.status, sub.failure_reason) == (Status.FAILED, "fetch_failed")
    assert "redirects" in (sub.failure_detail or "")


def test_fetch_media__redirect_to_blocked_address__fail(
    worker_env: WorkerEnv, receiver: CallbackReceiver
) -> None:
    receiver.files["/r"] = Media(redirect_to="http://169.254.169.254/latest/meta-data/")
    result, sub_id = _fetch(worker_env, receiver.url("/r"))
    assert result.outcome is fetch.FetchOutcome.FAILED
    assert "SSRF" in (submission_row(worker_env, sub_id).failure_detail or "")


@pytest.mark.parametrize(
    ("media", "settings", "reason"),
    [
        (Media(PNG_MAGIC + b"x" * 5000, "image/png"), {"max_upload_bytes": 1000}, "too_large"),
        (
            Media(PNG_MAGIC + bytes(300_000), "image/png", send_length=False),
            {"max_upload_bytes": 100_000},
            "too_large",
        ),
        (Media(b"<html>" + b"x" * 200, "image/png"), {}, "unsupported_media"),
        (
            Media(PNG_MAGIC + bytes(40_000), "image/png", chunk_delay_s=0.6),
            {"fetch_timeout_s": 1.0},
            "fetch_failed",
        ),
    ],
    ids=["too_large_declared", "too_large_streamed", "not_an_image", "too_slow"],
)
def test_fetch_media__limits__fail(
    request: pytest.FixtureRequest,
    worker_env: WorkerEnv,
    receiver: CallbackReceiver,
    media: Media,
    settings: dict[str, object],
    reason: str,
) -> None:
    receiver.files["/m"] = media
    result, sub_id = _fetch(worker_env, receiver.url("/m"), **settings)
    assert result.outcome is fetch.FetchOutcome.FAILED
    sub = submission_row(worker_env, sub_id)
    assert sub.failure_reason == reason
    expected = {"too_large_declared": "declares", "too_large_streamed": "sent more than"}
    assert expected.get(request.node.callspec.id, "") in (sub.failure_detail or "")


def test_fetch_media__closed_port__fail(worker_env: WorkerEnv) -> None:
    result, sub_id = _fetch(worker_env, "http://127.0.0.1:9/nothing.png")
    assert result.outcome is fetch.FetchOutcome.FAILED
    sub = submission_row(worker_env, sub_id)
    assert (sub.failure_reason, sub.completed_at is not None) == ("fetch_failed", True)


def test_fetch_media__http_error__fail(worker_env: WorkerEnv, receiver: CallbackReceiver) -> None:
    result, sub_id = _fetch(worker_env, receiver.url("/missing.png"))
    assert result.outcome is fetch.FetchOutcome.FAILED
    assert "HTTP 404" in (submission_row(worker_env, sub_id).failure_detail or "")
