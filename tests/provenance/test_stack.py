"""Provenance through the real stack: HTTP → API → broker → Celery worker (C2PA) → Triton → SQL →
signed callback → review dashboard, on the embedded and the PostgreSQL + Redis flavours.

The files are signed at test time with a chain whose root the worker trusts
(``DFMOD_C2PA_TRUST_ANCHORS``), as an operator configures the C2PA trust list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.media import image_bytes
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import (
    STACK_FLAVOURS,
    Stack,
    flavoured_stack,
    review_session,
    triton_env,
)
from tests.provenance.signing import Chain, corrupt_manifest, sign
from tests.video.media import colour_frames, encode

pytestmark = pytest.mark.integration

SCORED = {"auto_passed", "auto_flagged", "needs_review"}


@pytest.fixture(scope="module", params=STACK_FLAVOURS)
def stack(
    request: pytest.FixtureRequest,
    triton_server: object,
    tmp_path_factory: pytest.TempPathFactory,
    anchors_file: Path,
) -> Iterator[Stack]:
    """The API and a worker on the real Triton, trusting the test chain's root."""
    root = tmp_path_factory.mktemp(f"provenance-{request.param}")
    env = {
        **triton_env(triton_server),
        "DFMOD_C2PA_TRUST_ANCHORS": str(anchors_file),
        # About provenance, not the demo-weights review (tests/ensemble): the model may decide.
        "DFMOD_DEMO_WEIGHTS_DECIDE": "1",
    }
    with flavoured_stack(request, root, env) as started:
        yield started


@pytest.mark.parametrize(
    ("media", "mime"),
    [
        (lambda: image_bytes(fmt="JPEG", seed=11), "image/jpeg"),
        (lambda: encode(colour_frames(8)), "video/mp4"),
    ],
    ids=["jpeg", "mp4"],
)
def test_signed_ai_generated__flagged_by_provenance_reported_in_get_and_callback(
    stack: Stack, callback_receiver: CallbackReceiver, chain: Chain, media: object, mime: str
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    signed = sign(media(), mime, chain)  # type: ignore[operator]
    response = stack.submit_file(tenant.api_key, signed, callback_url=callback_receiver.url())
    assert response.status_code == 202, response.text
    final = stack.wait_final(tenant.api_key, response.json()["id"])
    verdict = final["verdict"]
    assert final["status"] == verdict["decision"] == "auto_flagged"
    assert verdict["decision_reason"] == "provenance:ai_generated"
    assert verdict["label"] == "ai_generated"
    prov = verdict["signals"]["provenance"]
    assert prov["manifest"] == "valid" and prov["ai_generated"] is True
    assert prov["digital_source_type"] == "trainedAlgorithmicMedia"
    assert prov["claim_generator"] == "TestGen 1.0"
    assert prov["signer"] == {"common_name": "Test Generator", "issuer": "dfmod tests"}
    assert prov["signature_valid"] is True and prov["hard_binding_valid"] is True
    # The model still ran: its own score and what its thresholds alone would decide.
    model = verdict["signals"]["model"]
    assert model["p_fake"] == verdict["p_fake"] and model["decision"] in SCORED
    assert model["name"] == "deepfake_detector"
    (callback,) = callback_receiver.wait_for(1, timeout_s=30)
    assert callback.signature_ok
    assert callback.json()["data"] == stack.get(tenant.api_key, final["id"]).json()


def test_corrupted_manifest__invalid_and_the_model_decides(stack: Stack, chain: Chain) -> None:
    tenant = stack.tenant()
    broken = corrupt_manifest(sign(image_bytes(fmt="JPEG", seed=12), "image/jpeg", chain))
    response = stack.submit_file(tenant.api_key, broken)
    assert response.status_code == 202, response.text
    final = stack.wait_final(tenant.api_key, response.json()["id"])
    assert final["status"] in SCORED and final["failure"] is None
    verdict = final["verdict"]
    assert verdict["signals"]["provenance"]["manifest"] == "invalid"
    assert verdict["decision_reason"] == "model" and verdict["label"] in ("real", "fake")


def test_no_manifest__provenance_null(stack: Stack) -> None:
    tenant = stack.tenant()
    response = stack.submit_file(tenant.api_key, image_bytes(seed=13))
    final = stack.wait_final(tenant.api_key, response.json()["id"])
    assert final["verdict"]["signals"]["provenance"] is None
    assert final["verdict"]["decision_reason"] == "model"


def test_dashboard_item_shows_the_provenance_summary(stack: Stack, chain: Chain) -> None:
    tenant = stack.tenant()
    signed = sign(image_bytes(fmt="JPEG", seed=14), "image/jpeg", chain, generator="ImageForge")
    submission_id = stack.submit_file(tenant.api_key, signed).json()["id"]
    assert stack.wait_final(tenant.api_key, submission_id)["status"] == "auto_flagged"
    http, _ = review_session(stack)
    page = http.get(f"{stack.api_url}/review/", params={"status": "auto_flagged"}, timeout=10)
    item = page.text[page.text.index(f'data-id="{submission_id}"') :]
    item = item[: item.index('<li class="item"', 1) if '<li class="item"' in item[1:] else None]
    assert "decided by <b>provenance:ai_generated</b>" in item
    assert "C2PA <b>valid</b>" in item and "declares AI generation" in item
    assert "trainedAlgorithmicMedia" in item and "by ImageForge 1.0" in item
    assert "signed by Test Generator (dfmod tests)" in item
