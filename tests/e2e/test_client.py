"""moderation.client against the real stack: API and worker processes on the real Triton.

Submissions as bytes, a file and a URL, each with an Idempotency-Key and a callback to a real
receiver on loopback; the verdict waited for with back-off; the list paged through; the callback's
Standard Webhooks signature verified by the client's own function, and each callback (scored and
failed) checked against the served OpenAPI document's ``webhooks``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import pytest

from moderation.client import ApiError, Client, WebhookVerificationError, verify_webhook
from tests.fixtures.media import image_bytes
from tests.fixtures.receiver import CallbackReceiver, Media
from tests.fixtures.stack import E2E_ENV, FINAL, Stack, embedded_stack, triton_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("client-stack")
    with embedded_stack(root, {**triton_env(triton_server), **E2E_ENV}) as started:
        yield started


def test_submit_wait_list_and_verify_callbacks(
    stack: Stack, callback_receiver: CallbackReceiver, tmp_path: Path
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes(seed=3))
    callback_receiver.files["/media.png"] = Media(image_bytes(seed=4), "image/png")
    hook = callback_receiver.url("/hook")
    with Client(stack.api_url, tenant.api_key) as dfmod:
        first = dfmod.submit_bytes(
            image_bytes(seed=2),
            content_type="image/png",
            idempotency_key="client-1",
            callback_url=hook,
            external_id="post-1",
            metadata={"user": 7},
        )
        again = dfmod.submit_bytes(
            image_bytes(seed=2),
            content_type="image/png",
            idempotency_key="client-1",
            callback_url=hook,
            external_id="post-1",
            metadata={"user": 7},
        )
        assert again.id == first.id
        from_file = dfmod.submit_file(photo, idempotency_key="client-2", callback_url=hook)
        from_url = dfmod.submit_url(
            callback_receiver.url("/media.png"), idempotency_key="client-3", callback_url=hook
        )
        ids = [first.id, from_file.id, from_url.id]
        done = [dfmod.wait(i, timeout_s=90) for i in ids]
        assert all(d.status in FINAL and d.status != "failed" for d in done), done
        assert done[0].metadata == {"user": 7} and done[0].external_id == "post-1"
        assert done[0].verdict is not None and 0.0 <= done[0].verdict.p_fake <= 1.0

        pages = [dfmod.list_page(limit=1)]
        while pages[-1].next_cursor:
            pages.append(dfmod.list_page(limit=1, cursor=pages[-1].next_cursor))
        assert [p.items[0].id for p in pages] == ids[::-1]  # newest first
        assert [s.id for s in dfmod.iter_submissions(page_size=2)] == ids[::-1]

        with pytest.raises(ApiError) as refused:
            dfmod.submit_url("ftp://example.com/a.png")
        assert refused.value.status == 422 and refused.value.type.endswith("/validation-error")
        not_media = dfmod.submit_bytes(b"plain text", content_type="image/png", callback_url=hook)
        assert dfmod.wait(not_media.id, timeout_s=90).status == "failed"

    # Every callback matches what the served document says a callback is (its `webhooks`).
    served = stack.http.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    event_schema = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/WebhookEvent", "components": served["components"]}
    )
    documented = served["webhooks"]
    callbacks = callback_receiver.wait_for(4, path="/hook", timeout_s=60)
    types: dict[str, str] = {}
    for item in callbacks:
        payload = verify_webhook(tenant.secret, item.headers, item.body)
        event_schema.validate(payload)
        headers = {name.lower() for name in item.headers}
        declared = documented[payload["type"]]["post"]["parameters"]
        assert {p["name"] for p in declared if p["in"] == "header"} <= headers
        types[payload["data"]["id"]] = payload["type"]
    assert types == {**dict.fromkeys(ids, "submission.scored"), not_media.id: "submission.failed"}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(tenant.secret, callbacks[0].headers, callbacks[0].body + b" ")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(tenant.secret, callbacks[0].headers, callbacks[0].body, tolerance_s=-1)
