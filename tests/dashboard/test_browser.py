"""The dashboard in Debian's Chromium via Playwright, against the real stack.

API and worker run as subprocesses on the real Triton; callbacks go to a real loopback receiver.
A reviewer logs in, decides an item with the keyboard, sees it leave the queue, the tenant gets
the signed ``submission.decided`` callback, and a dead callback is replayed from the overview.
A decision made with the keyboard settles a re-upload of the same photo through the bank; the
item page links the item that created the entry, and the banks page removes it.
Screenshots land in ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from moderation.models import CallbackDelivery, DeliveryStatus
from tests.fixtures.browser import add_reviewer, everything_to_review, log_in, new_page, shot
from tests.fixtures.media import image_bytes, jpeg, photo, reupload
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import E2E_ENV, Stack, embedded_stack, triton_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("dashboard-stack")
    with embedded_stack(root, {**triton_env(triton_server), **E2E_ENV}) as started:
        add_reviewer(started)
        yield started


def _kill_delivery(stack: Stack, delivery_id: str) -> None:
    """Marks a delivery dead as if its retry schedule were spent (what replay is for)."""
    with stack.session() as session:
        row = session.get(CallbackDelivery, delivery_id)
        assert row is not None
        row.status, row.next_attempt_at = DeliveryStatus.DEAD, None
        row.last_error = "HTTP 500; expected a 2xx answer"


def _decided(receiver: CallbackReceiver, count: int) -> list[Any]:
    got = receiver.wait_for(count, path="/decided", timeout_s=30)
    assert all(item.signature_ok for item in got), [item.headers for item in got]
    return got


def test_login_decide_callback_and_replay(
    stack: Stack, browser: Any, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    everything_to_review(stack, tenant.id)
    callback_receiver.secret = tenant.secret
    ids = []
    for seed in (11, 12):
        response = stack.submit_file(
            tenant.api_key, image_bytes(seed=seed), callback_url=callback_receiver.url("/decided")
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for submission_id in ids:
        assert stack.wait_final(tenant.api_key, submission_id)["status"] == "needs_review"
    scored = _decided(callback_receiver, 2)  # the scored events share the path
    assert {item.json()["type"] for item in scored} == {"submission.scored"}

    page = new_page(browser)
    page.goto(f"{stack.api_url}/review/")
    assert "/review/login" in page.url
    shot(page, "01-login")
    log_in(page, stack.api_url)
    first, second = (page.locator(f"li.item[data-id='{i}']") for i in ids)
    first.wait_for()
    assert first.locator("img").first.evaluate("img => img.complete && img.naturalWidth > 0")
    page.keyboard.press("h")  # the current item's overlay, drawn from its stored Grad-CAM map
    heatmap = first.locator("details.heatmap img")
    heatmap.wait_for()
    page.wait_for_function(
        "el => el.complete && el.naturalWidth === 96", arg=heatmap.element_handle()
    )  # the uploaded picture's own size (tests.fixtures.media.image_bytes)
    shot(page, "02-queue")

    page.keyboard.press("f")  # the first (oldest) item is current: decide it fake
    first.wait_for(state="detached")
    assert second.is_visible()
    shot(page, "03-after-decision")
    callbacks = _decided(callback_receiver, 3)
    event = callbacks[-1].json()
    assert (event["type"], event["data"]["id"], event["data"]["status"]) == (
        "submission.decided",
        ids[0],
        "decided",
    )
    assert event["data"]["review"]["label"] == "fake"

    page.goto(f"{stack.api_url}/review/audit")
    assert "alice" in page.locator("table.audit").inner_text()
    webhook_id = callbacks[-1].headers["webhook-id"]
    _kill_delivery(stack, webhook_id)
    page.goto(f"{stack.api_url}/review/overview")
    row = page.locator(f"tr[data-delivery='{webhook_id}']")
    shot(page, "04-overview-dead")
    row.locator("button:has-text('Replay')").click()
    page.wait_for_url(f"{stack.api_url}/review/overview")
    replayed = _decided(callback_receiver, 4)[-1]
    assert replayed.headers["webhook-id"] == webhook_id
    assert replayed.json()["type"] == "submission.decided"
    page.close()


def test_decision_in_the_browser_decides_the_reupload_by_bank(stack: Stack, browser: Any) -> None:
    """Decide a photo fake with the keyboard; its re-upload (JPEG q60, 70 %) is flagged by the
    bank; the item page links the item that created the entry; the banks page removes it."""

    tenant = stack.tenant()
    everything_to_review(stack, tenant.id)
    image = photo(400)
    first = stack.submit_file(tenant.api_key, jpeg(image, 92), filename="a.jpg").json()["id"]
    assert stack.wait_final(tenant.api_key, first)["status"] == "needs_review"

    page = new_page(browser, height=900)
    log_in(page, stack.api_url)
    page.goto(f"{stack.api_url}/review/?tenant={tenant.id}")
    item = page.locator(f"li.item[data-id='{first}']")
    item.wait_for()
    page.keyboard.press("f")
    item.wait_for(state="detached")

    again = stack.submit_file(tenant.api_key, reupload(image, quality=60, scale=0.7))
    body = stack.wait_final(tenant.api_key, again.json()["id"])
    assert (body["status"], body["verdict"]["decision_reason"]) == (
        "auto_flagged",
        "bank_match:fake",
    )
    page.goto(f"{stack.api_url}/review/item/{body['id']}")
    assert "bank_match:fake" in page.locator("b.reason").inner_text()
    shot(page, "05-bank-match")
    page.click("a.origin")
    page.wait_for_url(f"{stack.api_url}/review/item/{first}")
    page.goto(f"{stack.api_url}/review/banks")
    entry = page.locator(f"tr[data-entry='{body['verdict']['signals']['match']['entry_id']}']")
    shot(page, "06-banks")
    entry.locator("input[name=reason]").fill("wrong call")
    entry.locator("button:has-text('Remove')").click()
    page.wait_for_url(f"{stack.api_url}/review/banks")
    assert "removed" in page.locator(".flash").inner_text()
    assert entry.count() == 0
    page.close()


def test_api_docs_page_renders_the_openapi_document(stack: Stack, browser: Any) -> None:
    doc = stack.http.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    page = new_page(browser)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{stack.api_url}/docs")
    assert page.locator("h1").inner_text() == doc["info"]["title"]
    operations = page.locator("section.operation")
    documented = [*doc["paths"].values(), *doc["webhooks"].values()]
    assert operations.count() == sum(len(item) for item in documented)
    scored = page.locator("section#webhook_submission_scored")
    assert "submission.scored" in scored.locator("h3").inner_text()
    assert "webhook-signature" in scored.locator("table.parameters").inner_text()
    create = page.locator("section#createSubmission")
    assert "/v1/submissions" in create.locator("h3").inner_text()
    statuses = create.locator("tr[data-status]").evaluate_all(
        "rows => rows.map(r => r.dataset.status)"
    )
    assert set(statuses) == set(doc["paths"]["/v1/submissions"]["post"]["responses"])
    assert {"414", "431", "413", "405"} <= set(statuses)
    create.locator("a[href='#schema-SubmissionOut']").first.click()
    assert page.locator("section#schema-SubmissionOut").is_visible()
    assert page.url.endswith("#schema-SubmissionOut")
    shot(page, "05-api-docs")
    assert requested and all(url.startswith(stack.api_url) for url in requested), requested
    page.close()
