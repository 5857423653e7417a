"""End to end, on both stacks: HTTP → API → broker → Celery worker → Triton → database → callback.

Each test talks to the real API server over HTTP and waits (bounded) for the real worker; callbacks
arrive at a real HTTP receiver on 127.0.0.1 that verifies the Standard Webhooks signature with the
tenant's secret.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
import requests
from sqlalchemy import func, select

from moderation.blobs import BlobStore
from moderation.contract import ModelMetadata
from moderation.models import CallbackDelivery, MediaKind, Status, Submission, Verdict, utcnow
from moderation.policy import calibrate
from moderation.preprocess import load_image
from moderation.settings import load_settings
from serving.client import TritonClient
from tests.fixtures.media import flat_image, image_bytes
from tests.fixtures.receiver import CallbackReceiver, Media
from tests.fixtures.stack import E2E_ENV, Stack, closed_port
from worker.celery_app import create_celery
from worker.enqueue import TASK_SCORE

pytestmark = pytest.mark.integration

SCORED = {"auto_passed", "auto_flagged", "needs_review"}


def _count(stack: Stack, model: type, submission_id: str) -> int:
    with stack.session() as session:
        query = select(func.count()).where(model.submission_id == submission_id)
        return int(session.scalar(query) or 0)


def test_upload__scored_by_triton__signed_callback(
    stack: Stack, callback_receiver: CallbackReceiver, triton_server: object
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    data = image_bytes(seed=1)
    response = stack.submit_file(
        tenant.api_key, data, callback_url=callback_receiver.url("/scored"), external_id="post-1"
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["Location"].endswith(f"/v1/submissions/{accepted['id']}")
    final = stack.wait_final(tenant.api_key, accepted["id"])
    assert final["status"] in SCORED, final
    verdict = final["verdict"]
    assert verdict["model"] == {"name": "deepfake_detector", "version": "1"}
    # The stored score is Triton's logit for these exact pixels, calibrated by version 1's metadata.
    client = TritonClient(triton_server.grpc_url)  # type: ignore[attr-defined]
    try:
        logit = float(client.infer(load_image(data)[None]).logits[0])
    finally:
        client.close()
    meta = ModelMetadata.read(triton_server.repository / "deepfake_detector" / "1")  # type: ignore[attr-defined]
    assert verdict["p_fake"] == pytest.approx(calibrate(logit, meta.temperature), abs=1e-5)
    (callback,) = callback_receiver.wait_for(1, timeout_s=30)
    assert callback.signature_ok, callback.headers
    assert callback.headers["webhook-id"].startswith("msg_")
    event = callback.json()
    assert event["type"] == "submission.scored"
    assert (event["data"]["id"], event["data"]["external_id"]) == (accepted["id"], "post-1")
    assert event["data"]["status"] == final["status"]
    assert event["data"]["verdict"]["p_fake"] == pytest.approx(verdict["p_fake"])
    # The payload is the API's representation at the moment of the verdict, field for field.
    assert event["data"] == stack.get(tenant.api_key, accepted["id"]).json()


def test_callback__retried_with_same_webhook_id(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    callback_receiver.program(500)  # first attempt fails; the schedule's next wait is 5 s
    response = stack.submit_file(
        tenant.api_key, image_bytes(seed=2), callback_url=callback_receiver.url()
    )
    first, second = callback_receiver.wait_for(2, timeout_s=40)
    assert (first.answered, second.answered) == (500, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.signature_ok and second.signature_ok
    assert second.received_at - first.received_at >= 4.0
    assert _count(stack, CallbackDelivery, response.json()["id"]) == 1


def test_idempotency__one_job__redelivered_task_is_noop(
    stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    data, key = image_bytes(seed=3), {"Idempotency-Key": f"k-{time.time_ns()}"}
    fields = {"callback_url": callback_receiver.url()}
    first = stack.submit_file(tenant.api_key, data, headers=key, **fields)
    again = stack.submit_file(tenant.api_key, data, headers=key, **fields)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = stack.submit_file(tenant.api_key, image_bytes(seed=4), headers=key, **fields)
    assert other.status_code == 409
    submission_id = first.json()["id"]
    before = stack.wait_final(tenant.api_key, submission_id)
    callback_receiver.wait_for(1, timeout_s=30)
    # At-least-once delivery: the broker hands the same scoring task over again.
    settings = load_settings(environ={}, broker_url=stack.broker_url, data_dir=stack.root / "data")
    task_id = create_celery(settings).send_task(TASK_SCORE, args=[submission_id]).id
    _wait_task_done(stack, task_id)
    assert stack.get(tenant.api_key, submission_id).json() == before
    assert _count(stack, Verdict, submission_id) == 1
    assert _count(stack, CallbackDelivery, submission_id) == 1
    assert len(callback_receiver.received) == 1


def _wait_task_done(stack: Stack, task_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    log = stack.root / "worker.log"
    while time.monotonic() < deadline:
        if f"[{task_id}] succeeded" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish\n{stack.log_tail()}")


def test_tenant_isolation(stack: Stack) -> None:
    alice, bob = stack.tenant(), stack.tenant()
    submission_id = stack.submit_file(alice.api_key, image_bytes(seed=5)).json()["id"]
    assert stack.get(bob.api_key, submission_id).status_code == 404
    listed = stack.http.get(
        f"{stack.api_url}/v1/submissions",
        headers={"Authorization": f"Bearer {bob.api_key}"},
        timeout=10,
    )
    assert listed.status_code == 200 and submission_id not in listed.text
    assert stack.wait_final(alice.api_key, submission_id)["status"] in SCORED


def test_media_url__fetched_and_scored(stack: Stack, callback_receiver: CallbackReceiver) -> None:
    tenant = stack.tenant()
    callback_receiver.files["/photo.jpg"] = Media(image_bytes(seed=6, fmt="JPEG"), "image/jpeg")
    response = stack.submit_url(tenant.api_key, callback_receiver.url("/photo.jpg"))
    assert response.status_code == 202, response.text
    final = stack.wait_final(tenant.api_key, response.json()["id"])
    assert final["status"] in SCORED, final
    assert final["media"]["sha256"] and final["media"]["kind"] == "url"


TRUNCATED_PNG = image_bytes((200, 200), seed=7)[:3000]
FAILURES = {
    "unsupported_media": ("file", b"%PDF-1.7\n" + b"0" * 200),
    "unreadable_media": ("file", TRUNCATED_PNG),
    "too_large": ("file", flat_image((1200, 1000))),  # 1.2 Mpx > DFMOD_MAX_IMAGE_PIXELS
    "too_large_url": ("url", "/big.png"),  # 2.5 MB > DFMOD_MAX_UPLOAD_BYTES
    "fetch_failed": ("url", "closed"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_reason__through_api(
    stack: Stack, callback_receiver: CallbackReceiver, case: str
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    kind, payload = FAILURES[case]
    fields = {"callback_url": callback_receiver.url("/failed")}
    if kind == "file":
        assert isinstance(payload, bytes)
        response = stack.submit_file(tenant.api_key, payload, **fields)
    else:
        callback_receiver.files["/big.png"] = Media(b"\x89PNG\r\n\x1a\n" + bytes(2_500_000))
        url = (
            f"http://127.0.0.1:{closed_port()}/gone.png"
            if payload == "closed"
            else callback_receiver.url(str(payload))
        )
        response = stack.submit_url(tenant.api_key, url, **fields)
    assert response.status_code == 202, response.text
    final = stack.wait_final(tenant.api_key, response.json()["id"])
    reason = case.removesuffix("_url")
    assert (final["status"], final["failure"]["reason"]) == ("failed", reason), final
    assert final["failure"]["detail"] and final["verdict"] is None
    (callback,) = callback_receiver.wait_for(1, path="/failed", timeout_s=30)
    assert callback.signature_ok and callback.json()["type"] == "submission.failed"
    assert callback.json()["data"]["failure"]["reason"] == reason
    assert callback.json()["data"] == stack.get(tenant.api_key, final["id"]).json()


def test_sweeper__recovers_lost_messages(stack: Stack, callback_receiver: CallbackReceiver) -> None:
    """A job whose message never reached the broker, and a due callback nobody enqueued."""
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    blobs = BlobStore(stack.root / "data" / "blobs")
    # Stuck only in a few seconds: a later sweep, not the first one, has to find it.
    long_ago = utcnow() - dt.timedelta(seconds=float(E2E_ENV["DFMOD_STUCK_AFTER_S"]) - 5)
    with stack.session() as session:
        lost = Submission(
            tenant_id=tenant.id,
            media_kind=MediaKind.UPLOAD,
            status=Status.RECEIVED,
            blob_sha256=blobs.put(image_bytes(seed=12)),
            callback_url=callback_receiver.url("/lost"),
            created_at=long_ago,
            updated_at=long_ago,
        )
        session.add(lost)
        session.flush()
        lost_id = lost.id
    final = stack.wait_final(tenant.api_key, lost_id, timeout_s=45)
    assert final["status"] in SCORED
    (callback,) = callback_receiver.wait_for(1, path="/lost", timeout_s=30)
    assert callback.signature_ok and callback.json()["data"]["id"] == lost_id


def test_worker_metrics_time_every_stage(stack: Stack, callback_receiver: CallbackReceiver) -> None:
    """The worker's /metrics (every process of the pool together) times each stage it ran."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{stack.env['DFMOD_WORKER_METRICS_PORT']}/metrics"

    def stage_samples() -> dict[tuple[str, str], float]:
        """Returns {(sample name, stage): value} of the stage histogram and CPU counter."""
        text = stack.http.get(url, timeout=10).text
        return {
            (sample.name, sample.labels["stage"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name in ("dfmod_worker_stage_seconds", "dfmod_worker_stage_cpu_seconds")
            for sample in family.samples
            if "stage" in sample.labels
        }

    def stage_counts(samples: dict[tuple[str, str], float]) -> dict[str, float]:
        return {
            stage: value
            for (name, stage), value in samples.items()
            if name == "dfmod_worker_stage_seconds_count"
        }

    deadline = time.monotonic() + 60  # the worker may still be starting (the API answers first)
    while True:
        try:
            samples_before = stage_samples()
            before = stage_counts(samples_before)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"no worker /metrics\n{stack.log_tail()}"
            time.sleep(0.5)
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    sent = 3
    ids = [
        stack.submit_file(
            tenant.api_key, image_bytes(seed=40 + i), callback_url=callback_receiver.url("/m")
        ).json()["id"]
        for i in range(sent)
    ]
    for submission_id in ids:
        assert stack.wait_final(tenant.api_key, submission_id)["status"] in SCORED
    callback_receiver.wait_for(sent, timeout_s=30)
    # claim + verdict per scoring, the record per callback attempt (and its claim, unless the
    # verdict's write made it: when a dispatch thread was free for it)
    wanted = {"blob": sent, "decode": sent, "resize": sent, "inference": sent, "callback": sent}
    wanted |= {"queue": sent, "callback_queue": sent}
    wanted["database"] = 3 * sent
    deadline = time.monotonic() + 10  # a worker records a stage just after the receiver answered
    while True:
        samples_after = stage_samples()
        after = stage_counts(samples_after)
        grew = {name: after.get(name, 0) - before.get(name, 0) for name in wanted}
        if all(grew[name] >= count for name, count in wanted.items()):
            break
        assert time.monotonic() < deadline, (grew, wanted)
        time.sleep(0.2)
    # Each timed stage's CPU time is counted too: decoding is work, and a thread's CPU time in a
    # block never exceeds the block's wall time.

    def spent(name: str, stage: str) -> float:
        return samples_after.get((name, stage), 0.0) - samples_before.get((name, stage), 0.0)

    for stage in ("decode", "resize", "database", "callback"):
        cpu, wall = (
            spent("dfmod_worker_stage_cpu_seconds_total", stage),
            spent("dfmod_worker_stage_seconds_sum", stage),
        )
        assert 0 < cpu <= wall + 0.01, (stage, cpu, wall)
