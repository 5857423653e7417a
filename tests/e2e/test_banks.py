"""Known-media banks through the real stack (API and worker subprocesses, the real Triton, SQLite
or PostgreSQL + Redis): a reviewer decides an item in the dashboard, and a re-upload of the same
photo, re-encoded at JPEG quality 60 and resized to 70 %, is decided by the bank, not the model.
"""

from __future__ import annotations

from typing import Any

import pytest

from moderation.tenants import set_thresholds
from tests.fixtures.database import TenantKeys
from tests.fixtures.media import jpeg, photo, reupload
from tests.fixtures.stack import Stack, review_session

pytestmark = pytest.mark.integration


def _in_db(stack: Stack, change: Any) -> Any:
    with stack.session() as session:
        return change(session)


def _reviewed_tenant(stack: Stack) -> TenantKeys:
    tenant = stack.tenant()
    _in_db(
        stack,
        lambda s: set_thresholds(session=s, tenant_id=tenant.id, pass_below=0.0, flag_at=1.0),
    )
    return tenant


def _submit(stack: Stack, tenant: TenantKeys, data: bytes) -> dict[str, Any]:
    response = stack.submit_file(tenant.api_key, data, filename="photo.jpg")
    assert response.status_code == 202, response.text
    return stack.wait_final(tenant.api_key, response.json()["id"])


@pytest.mark.parametrize(("label", "status"), [("fake", "auto_flagged"), ("real", "auto_passed")])
def test_dashboard_decision_decides_the_reupload(stack: Stack, label: str, status: str) -> None:
    tenant = _reviewed_tenant(stack)
    image = photo(300 if label == "fake" else 301)
    first = _submit(stack, tenant, jpeg(image, 92))
    assert first["status"] == "needs_review"
    assert first["verdict"]["decision_reason"] == "model"
    assert first["verdict"]["signals"]["match"] is None

    browser, token = review_session(stack)
    decided = browser.post(
        f"{stack.api_url}/review/decide",
        data={"submission_id": first["id"], "label": label, "csrf_token": token},
        timeout=10,
    )
    assert decided.status_code == 200 and f"as {label}" in decided.text

    again = _submit(stack, tenant, reupload(image, quality=60, scale=0.7))
    verdict = again["verdict"]
    assert again["status"] == status
    assert verdict["decision"] == status
    assert verdict["decision_reason"] == f"bank_match:{label}"
    assert verdict["signals"]["model"]["decision"] == "needs_review"  # the model would not have
    match = verdict["signals"]["match"]
    assert match["verdict"] == label and match["bank"].endswith(f"-{label}")
    assert match["distance"] <= 31 and match["origin"]["submission"] == first["id"]
    assert verdict["signals"]["provenance"] is None

    item = browser.get(f"{stack.api_url}/review/item/{again['id']}", timeout=10).text
    assert f"/review/item/{first['id']}" in item and match["bank"] in item
    banks = browser.get(f"{stack.api_url}/review/banks", timeout=10).text
    assert match["bank"] in banks and f'data-entry="{match["entry_id"]}"' in banks

    removed = browser.post(
        f"{stack.api_url}/review/banks/entries/{match['entry_id']}/remove",
        data={"reason": "test removal", "csrf_token": token},
        timeout=10,
    )
    assert removed.status_code == 200 and "removed" in removed.text
    third = _submit(stack, tenant, reupload(image, quality=70, scale=0.8))
    assert third["status"] == "needs_review" and third["verdict"]["decision_reason"] == "model"


def test_reversed_decision_moves_the_hash(stack: Stack) -> None:
    tenant = _reviewed_tenant(stack)
    image = photo(302)
    first = _submit(stack, tenant, jpeg(image, 92))
    browser, token = review_session(stack)
    for url, label in (("decide", "fake"), ("reverse", "real")):
        answer = browser.post(
            f"{stack.api_url}/review/{url}",
            data={"submission_id": first["id"], "label": label, "csrf_token": token},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    again = _submit(stack, tenant, reupload(image))
    assert (again["status"], again["verdict"]["decision_reason"]) == (
        "auto_passed",
        "bank_match:real",
    )
