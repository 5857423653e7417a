"""moderation.client.verify_webhook against what dfmod's signer (moderation.signing) sends."""

from __future__ import annotations

import json
import time

import pytest

from moderation import signing
from moderation.client import WebhookVerificationError, sign_webhook, verify_webhook

BODY = json.dumps({"type": "submission.scored", "data": {"id": "sub_1"}}).encode()


def test_a_signed_callback_verifies_and_returns_its_json() -> None:
    secret = signing.new_secret()
    headers = signing.headers(secret, "msg_1", BODY)
    assert verify_webhook(secret, headers, BODY)["data"]["id"] == "sub_1"
    assert sign_webhook(secret, "msg_1", headers["webhook-timestamp"], BODY) in (
        headers["webhook-signature"].split()
    )


def test_either_secret_verifies_while_rotating() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    headers = signing.headers(old, "msg_2", BODY)
    assert verify_webhook([new, old], headers, BODY)
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify_webhook(new, headers, BODY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.pop("webhook-signature"), "missing header"),
        (lambda h: h.update({"webhook-timestamp": "soon"}), "not an integer"),
        (lambda h: h.update({"webhook-timestamp": str(int(time.time()) - 3600)}), "away from now"),
        (lambda h: h.update({"webhook-id": "msg_other"}), "no v1 signature"),
    ],
)
def test_a_tampered_or_stale_callback_is_refused(change: object, message: str) -> None:
    secret = signing.new_secret()
    headers = dict(signing.headers(secret, "msg_3", BODY))
    change(headers)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError, match=message):
        verify_webhook(secret, headers, BODY)
