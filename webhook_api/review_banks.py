"""Dashboard pages for known-media banks: an item with its signals (the matched entry links to
the item that created it), the banks with sizes and newest entries, entry removal and reversing a
decision. Routes on the review blueprint; every POST carries the CSRF token it checks."""

from __future__ import annotations

import logging
from typing import Any

from flask import abort, flash, redirect, render_template, request, session, url_for

from moderation import bank_dashboard
from moderation.banks import BankError, remove_entry
from moderation.db import session_scope
from moderation.reviews import ReviewError, reverse
from webhook_api.review import bp, login_required
from webhook_api.state import state

logger = logging.getLogger(__name__)


@bp.get("/item/<submission_id>")
@login_required
def item(submission_id: str) -> Any:
    with session_scope(state().session_factory) as db:
        detail = bank_dashboard.item_detail(session=db, submission_id=submission_id)
    if detail is None:
        abort(404, description=f"no submission {submission_id}")
    return render_template("review/item.html", item=detail, data=detail.view.to_json())


@bp.get("/banks")
@login_required
def banks() -> Any:
    with session_scope(state().session_factory) as db:
        panels = bank_dashboard.bank_panels(session=db)
    return render_template("review/banks.html", panels=panels)


@bp.post("/banks/entries/<int:entry_id>/remove")
@login_required
def remove_bank_entry(entry_id: int) -> Any:
    reason = request.form.get("reason", "").strip()
    if not reason:
        flash("Give a reason to remove a bank entry.")
        return redirect(url_for("review.banks"))
    try:
        with session_scope(state().session_factory) as db:
            remove_entry(session=db, entry_id=entry_id, by=session["reviewer"], reason=reason)
    except BankError as exc:
        flash(str(exc))
    else:
        flash(f"Bank entry {entry_id} removed.")
    return redirect(url_for("review.banks"))


@bp.post("/reverse")
@login_required
def reverse_view() -> Any:
    submission_id = request.form.get("submission_id", "")
    label, note = request.form.get("label", ""), request.form.get("note", "").strip()
    try:
        with session_scope(state().session_factory) as db:
            reverse(
                db, submission_id=submission_id, reviewer=session["reviewer"], label=label,
                note=note or None,
            )  # fmt: skip
    except ReviewError as exc:
        flash(f"{submission_id}: {exc}")
    else:
        flash(f"Decision on {submission_id} reversed to {label}.")
    return redirect(url_for("review.item", submission_id=submission_id))
