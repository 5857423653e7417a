"""The review dashboard: session login, the needs_review queue, decisions, audit and overview.

Server-rendered pages under ``/review`` with local assets only. Every page needs a logged-in
reviewer; every POST carries the session's CSRF token. A decision commits the status change, the
Review row and the ``submission.decided`` outbox row together, then enqueues the delivery.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState

from moderation import dashboard
from moderation.blobs import BlobNotFound
from moderation.db import session_scope
from moderation.explanation import placard
from moderation.models import Submission
from moderation.reviewers import authenticate
from moderation.reviews import Decision, ReviewError, decide
from moderation.tenant_models import ensemble_overview
from webhook_api import overlays
from webhook_api.state import state
from worker.enqueue import TASK_DELIVER, enqueue

logger = logging.getLogger(__name__)

bp = Blueprint(
    "review",
    __name__,
    url_prefix="/review",
    template_folder="templates",
    static_folder="static/review",
    static_url_path="/static",
)

SECRET_KEY_FILE = "review_secret_key"
CSRF_FIELD = "csrf_token"


def _secret_key(app: Any) -> str:
    """Returns the app's SECRET_KEY, else one generated once into the data folder (mode 0600)."""
    if app.secret_key:
        return str(app.secret_key)
    path = Path(app.config["DFMOD_SETTINGS"].data_dir) / SECRET_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process wrote it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip()


@bp.record_once
def _configure(setup: BlueprintSetupState) -> None:
    app = setup.app
    app.secret_key = _secret_key(app)
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")


def csrf_token() -> str:
    """Returns the session's CSRF token, creating it on first use."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(session[CSRF_FIELD])


bp.add_app_template_global(csrf_token, "csrf_token")


@bp.before_request
def _check_csrf() -> None:
    if request.method == "POST":
        sent = request.form.get(CSRF_FIELD, "")
        expected = session.get(CSRF_FIELD, "")
        if not expected or not hmac.compare_digest(str(sent), str(expected)):
            abort(400, description="missing or wrong CSRF token; reload the page and retry")


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Redirects to the login page unless a reviewer is logged in."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not session.get("reviewer"):
            return redirect(url_for("review.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapped


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/review") and not target.startswith("//"):
        return target
    return url_for("review.queue")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        with session_scope(state().session_factory) as db:
            reviewer = authenticate(
                session=db,
                name=request.form.get("name", ""),
                password=request.form.get("password", ""),
            )
            name = reviewer.name if reviewer else None
        if name is None:
            flash("Wrong name or password.")
            return render_template("review/login.html"), 401
        session.clear()
        session["reviewer"] = name
        csrf_token()
        logger.info("reviewer %s logged in", name)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("review/login.html")


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("review.login"))


@bp.get("/")
@login_required
def queue() -> Any:
    filters = {k: request.args.get(k) or None for k in ("tenant", "band", "version", "status")}
    status = filters["status"] or "needs_review"
    if status not in dashboard.QUEUE_STATUSES:
        abort(400, description=f"status {status!r}; expected one of {dashboard.QUEUE_STATUSES}")
    with session_scope(state().session_factory) as db:
        items = dashboard.queue_items(
            session=db,
            tenant_id=filters["tenant"],
            band=filters["band"],
            model_version=filters["version"],
            status=status,
        )
        choices = dashboard.filter_choices(session=db)
    on_demand = overlays.on_demand_versions(state().settings.model_name, choices["versions"])
    return render_template(
        "review/queue.html",
        items=items,
        choices=choices,
        filters=filters,
        status=status,
        statuses=dashboard.QUEUE_STATUSES,
        bands=dashboard.SCORE_BANDS,
        on_demand=on_demand,
    )


@bp.get("/media/<submission_id>")
@login_required
def media(submission_id: str) -> Any:
    with session_scope(state().session_factory) as db:
        row = db.get(Submission, submission_id)
        sha, content_type = (row.blob_sha256, row.content_type) if row else (None, None)
    if not sha:
        abort(404, description=f"no stored media for {submission_id}")
    try:
        data = state().blobs.get(sha)
    except BlobNotFound:  # the queue's <img> shows why instead of breaking
        return _png(placard("The media of this item is gone from the blob store."))
    response = Response(data, mimetype=content_type or "application/octet-stream")
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/gradcam/<submission_id>")
@login_required
def gradcam(submission_id: str) -> Any:
    """The item's Grad-CAM overlay from its stored map (a PNG that says why when there is none)."""
    result = overlays.item_overlay(submission_id)
    if result is None:
        abort(404, description=f"no scored item {submission_id}")
    return _png(result.png, heatmap=result.drawn)


def _png(png: bytes, *, heatmap: bool | None = None) -> Response:
    """Returns a PNG response; ``heatmap`` says whether a requested overlay was drawn."""
    response = Response(png, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"
    if heatmap is not None:
        response.headers["X-Heatmap"] = "drawn" if heatmap else "unavailable"
    return response


@bp.get("/frame/<submission_id>/<int:index>")
@login_required
def frame(submission_id: str, index: int) -> Any:
    """A video's sampled frame as PNG (``?heatmap=1``: its Grad-CAM overlay)."""
    from moderation.preprocess import MediaRejected
    from moderation.video import VideoLimits, frame_png

    app_state = state()
    with session_scope(app_state.session_factory) as db:
        row = db.get(Submission, submission_id)
        if row is None or row.verdict is None or not row.verdict.frames or not row.blob_sha256:
            abort(404, description=f"no scored video for {submission_id}")
        frames = row.verdict.frames["frames"]
        if not 0 <= index < len(frames):
            abort(404, description=f"frame {index}; expected 0..{len(frames) - 1}")
        sha = row.blob_sha256
    settings, at = app_state.settings, float(frames[index]["timestamp_s"])
    try:
        png = frame_png(app_state.blobs.get(sha), VideoLimits.from_settings(settings), at)
    except BlobNotFound:  # the strip's <img> shows why instead of breaking
        return _png(placard("The video is gone from the blob store."))
    except (MediaRejected, LookupError) as exc:
        return _png(placard(f"Frame {index} cannot be shown: {exc}"))
    if request.args.get("heatmap"):
        result = overlays.frame_overlay(submission_id, index, png)
        return _png(result.png, heatmap=result.drawn)
    return _png(png)


def _enqueue_delivery(delivery_id: str) -> None:
    enqueue(state().celery, TASK_DELIVER, delivery_id)


@bp.post("/decide")
@login_required
def decide_view() -> Any:
    ids = request.form.getlist("submission_id")
    label, note = request.form.get("label", ""), request.form.get("note", "").strip()
    done: list[Decision] = []
    for submission_id in ids:
        try:
            with session_scope(state().session_factory) as db:
                done.append(
                    decide(
                        db,
                        submission_id=submission_id,
                        reviewer=session["reviewer"],
                        label=label,
                        note=note or None,
                    )
                )
        except ReviewError as exc:
            flash(f"{submission_id}: {exc}")
    for decision in done:
        if decision.delivery_id:
            _enqueue_delivery(decision.delivery_id)
    if done:
        flash(f"Decided {len(done)} item(s) as {label}.")
    return redirect(_safe_next(request.form.get("back")))


@bp.get("/audit")
@login_required
def audit() -> Any:
    with session_scope(state().session_factory) as db:
        rows = dashboard.audit_rows(session=db)
    return render_template("review/audit.html", rows=rows)


@bp.get("/overview")
@login_required
def overview() -> Any:
    from webhook_api.versions import repository_view

    repository = repository_view(state().settings)
    with session_scope(state().session_factory) as db:
        data = dashboard.overview(session=db)
        settings = state().settings
        data["models"] = ensemble_overview(
            session=db, repository=settings.model_repository, default_models=settings.models
        )
        return render_template("review/overview.html", data=data, repository=repository)


@bp.post("/callbacks/<delivery_id>/replay")
@login_required
def replay(delivery_id: str) -> Any:
    from moderation.outbox import replay as replay_delivery

    if not replay_delivery(delivery_id=delivery_id, session_factory=state().session_factory):
        abort(404, description=f"no callback delivery {delivery_id}")
    _enqueue_delivery(delivery_id)
    logger.info("callback %s replayed by %s", delivery_id, session["reviewer"])
    flash(f"Callback {delivery_id} queued for another attempt.")
    return redirect(url_for("review.overview"))


# The bank pages register their routes on this blueprint.
from webhook_api import review_banks  # noqa: E402, F401
