"""The dashboard in-process on SQLite: login, CSRF, queue, decisions, audit, overview, replay."""

from __future__ import annotations

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from moderation.cli import main
from moderation.db import session_scope
from moderation.models import CallbackDelivery, DeliveryStatus, Review, Reviewer, Submission
from moderation.settings import Settings
from tests.fixtures.flask_app import add_item, login, token


def _db(app: Flask):  # type: ignore[no-untyped-def]
    return session_scope(app.extensions["dfmod"].session_factory)


def test_pages_need_login(client: FlaskClient, settings: Settings) -> None:
    item = add_item(settings, p_fake=0.5)
    for path in ("/review/", "/review/audit", "/review/overview", f"/review/media/{item}"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/review/login")


def test_wrong_password_is_refused_and_password_is_hashed(app: Flask, client: FlaskClient) -> None:
    page = client.get("/review/login").get_data(as_text=True)
    response = client.post(
        "/review/login", data={"name": "alice", "password": "nope-nope", "csrf_token": token(page)}
    )
    assert response.status_code == 401
    assert client.get("/review/").status_code == 302
    with _db(app) as session:
        stored = session.scalar(select(Reviewer.password_hash))
    assert stored and stored.startswith("scrypt:") and "correct horse" not in stored


def test_post_without_csrf_token_is_rejected(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    item = add_item(settings, p_fake=0.5)
    login(client)
    response = client.post("/review/decide", data={"submission_id": item, "label": "fake"})
    assert response.status_code == 400
    with _db(app) as session:
        assert session.get(Submission, item).status == "needs_review"  # type: ignore[union-attr]


def test_queue_oldest_first_with_filters_and_media(client: FlaskClient, settings: Settings) -> None:
    first = add_item(settings, p_fake=0.30, data=b"first-bytes", version="1")
    second = add_item(settings, p_fake=0.70, data=b"second-bytes", version="2")
    login(client)
    page = client.get("/review/").get_data(as_text=True)
    assert first in page and second in page and page.index(first) < page.index(second)
    assert "0.300" in page and "0.700" in page
    high = client.get("/review/?band=high").get_data(as_text=True)
    assert second in high and first not in high
    v1 = client.get("/review/?version=1").get_data(as_text=True)
    assert first in v1 and second not in v1
    assert client.get(f"/review/media/{first}").data == b"first-bytes"
    assert client.get("/review/?status=bogus").status_code == 400


def test_status_filter_lists_decided_items_without_decide_buttons(
    client: FlaskClient, settings: Settings
) -> None:
    item = add_item(settings, p_fake=0.5)
    csrf = login(client)
    client.post("/review/decide", data={"submission_id": item, "label": "real", "csrf_token": csrf})
    decided = client.get("/review/?status=decided").get_data(as_text=True)
    assert item in decided and 'class="decide"' not in decided
    assert item not in client.get("/review/?status=needs_review").get_data(as_text=True)


def test_decision_leaves_queue_writes_review_and_outbox(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    item, other = add_item(settings, p_fake=0.6), add_item(settings, p_fake=0.4)
    csrf = login(client)
    response = client.post(
        "/review/decide",
        data={"submission_id": item, "label": "fake", "note": "seams", "csrf_token": csrf},
    )
    assert response.status_code == 302
    page = client.get("/review/").get_data(as_text=True)
    assert item not in page and other in page
    with _db(app) as session:
        assert session.get(Submission, item).status == "decided"  # type: ignore[union-attr]
        review = session.scalar(select(Review).where(Review.submission_id == item))
        delivery = session.scalar(
            select(CallbackDelivery).where(CallbackDelivery.submission_id == item)
        )
    assert review is not None and (review.reviewer, review.label, review.note) == (
        "alice",
        "fake",
        "seams",
    )
    assert delivery is not None and delivery.event_type == "submission.decided"
    assert delivery.payload["data"]["status"] == "decided"
    # A second decision on the same item is refused and adds nothing.
    client.post("/review/decide", data={"submission_id": item, "label": "real", "csrf_token": csrf})
    with _db(app) as session:
        assert len(session.scalars(select(Review)).all()) == 1
    audit = client.get("/review/audit").get_data(as_text=True)
    assert item in audit and "alice" in audit and "seams" in audit


def test_bulk_decision(app: Flask, client: FlaskClient, settings: Settings) -> None:
    items = [add_item(settings, p_fake=0.5) for _ in range(3)]
    csrf = login(client)
    client.post(
        "/review/decide",
        data={"submission_id": items[:2], "label": "real", "csrf_token": csrf},
    )
    with _db(app) as session:
        statuses = [session.get(Submission, i).status for i in items]  # type: ignore[union-attr]
    assert statuses == ["decided", "decided", "needs_review"]


def test_overview_lists_dead_callback_and_replay_makes_it_due(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    item = add_item(settings, p_fake=0.9)
    csrf = login(client)
    client.post("/review/decide", data={"submission_id": item, "label": "fake", "csrf_token": csrf})
    with _db(app) as session:
        delivery = session.scalar(select(CallbackDelivery))
        assert delivery is not None
        delivery.status, delivery.next_attempt_at = DeliveryStatus.DEAD, None
        delivery_id = delivery.id
    page = client.get("/review/overview").get_data(as_text=True)
    assert delivery_id in page and "Replay" in page
    assert 'data-status="decided">1<' in page
    assert "100.0%" in page  # p_fake 0.9 and label fake agree
    response = client.post(f"/review/callbacks/{delivery_id}/replay", data={"csrf_token": csrf})
    assert response.status_code == 302
    with _db(app) as session:
        assert session.get(CallbackDelivery, delivery_id).status == "pending"  # type: ignore[union-attr]


def test_logout_ends_the_session(client: FlaskClient) -> None:
    csrf = login(client)
    assert client.post("/review/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/review/").status_code == 302


def test_cli_creates_reviewer_from_stdin(settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DFMOD_DATABASE_URL", settings.resolved_database_url)
    runner = CliRunner()
    result = runner.invoke(
        main, ["reviewer", "create", "bob", "--password-stdin"], input="s3cret-pass\n"
    )
    assert result.exit_code == 0, result.output
    again = runner.invoke(
        main, ["reviewer", "create", "bob", "--password-stdin"], input="s3cret-pass\n"
    )
    assert again.exit_code != 0 and "exists" in again.output
    short = runner.invoke(main, ["reviewer", "create", "carol", "--password-stdin"], input="x\n")
    assert short.exit_code != 0 and "too short" in short.output
