"""Standard Webhooks signing: the published test vector, round trips and every refusal."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from moderation import signing

# The Standard Webhooks reference vector (used by every reference library's tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_reproduces_the_standard_webhooks_vector() -> None:
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_verify_accepts_the_vector_among_several_signatures() -> None:
    header = f"v1,bm9wZQ== {VECTOR_SIGNATURE}"
    signing.verify(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY, header, now=VECTOR_TS + 10)


@pytest.mark.parametrize(
    ("msg_id", "body", "header"),
    [
        ("msg_other", VECTOR_BODY, VECTOR_SIGNATURE),
        (VECTOR_ID, '{"test": 2432232315}', VECTOR_SIGNATURE),
        (VECTOR_ID, VECTOR_BODY, "v2," + VECTOR_SIGNATURE[3:]),
        (VECTOR_ID, VECTOR_BODY, ""),
    ],
)
def test_verify__fail_on_tampering(msg_id: str, body: str, header: str) -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify(VECTOR_SECRET, msg_id, VECTOR_TS, body, header, now=VECTOR_TS)


def test_verify__fail_on_stale_timestamp() -> None:
    with pytest.raises(signing.SignatureError, match="from now"):
        signing.verify(
            VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY, VECTOR_SIGNATURE, now=VECTOR_TS + 301
        )


def test_new_secret_is_whsec_base64_of_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) >= 24
    assert secret != signing.new_secret()


def test_headers_round_trip_through_verify() -> None:
    secret = signing.new_secret()
    body = b'{"id": "sub_1", "status": "auto_passed"}'
    headers = signing.headers(secret, "msg_1", body, timestamp=1_700_000_000)
    assert headers["webhook-id"] == "msg_1"
    signing.verify(
        secret,
        headers["webhook-id"],
        headers["webhook-timestamp"],
        body,
        headers["webhook-signature"],
        now=1_700_000_000,
    )


def test_sign__fail_on_a_secret_that_is_not_base64() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        signing.sign("whsec_not base64!", "msg", 1, b"{}")


# The Standard Webhooks project's own Python verifier, as a platform would use it.
_BODY = '{"type": "submission.scored", "data": {"id": "sub_1", "note": "café ✓"}}'.encode()


def test_the_reference_library_verifies_what_we_sign() -> None:
    secret = signing.new_secret()
    headers = signing.headers(secret, "dlv_1", _BODY)
    assert Webhook(secret).verify(_BODY, headers)["data"]["note"] == "café ✓"


def test_the_reference_library_verifies_both_secrets_of_a_rotation() -> None:
    current, previous = signing.new_secret(), signing.new_secret()
    timestamp = int(time.time())
    header = signing.signature_header([current, previous], "dlv_2", timestamp, _BODY)
    headers = {"webhook-id": "dlv_2", "webhook-timestamp": str(timestamp)}
    for secret in (current, previous):
        Webhook(secret).verify(_BODY, {**headers, "webhook-signature": header})
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(_BODY, {**headers, "webhook-signature": header})


def test_we_verify_what_the_reference_library_signs() -> None:
    secret = signing.new_secret()
    moment = dt.datetime.now(dt.UTC)
    signature = Webhook(secret).sign("msg_3", moment, _BODY.decode())
    signing.verify(secret, "msg_3", int(moment.timestamp()), _BODY, signature)
