"""Reviewer accounts of the dashboard: created from the command line, passwords kept as hashes.

Hashes come from ``werkzeug.security`` (scrypt with a random salt), so the database never holds a
password. Login checks run the hash even for unknown names, so timing does not reveal which
accounts exist.
"""

from __future__ import annotations

import logging
import sys

import click
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from moderation.models import Reviewer

logger = logging.getLogger(__name__)

MIN_PASSWORD_CHARS = 8
HASH_METHOD = "scrypt"
# Checked when the name is unknown, so a miss costs as much time as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-password", method=HASH_METHOD)


class ReviewerError(ValueError):
    """The account cannot be created as given; the message says what was expected."""


def create_reviewer(*, session: Session, name: str, password: str) -> Reviewer:
    """Creates an active reviewer with a hashed password; raises on a taken name or short one."""
    name = name.strip()
    if not name:
        raise ReviewerError("reviewer name is empty; expected a non-empty name")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ReviewerError(
            f"password too short; expected at least {MIN_PASSWORD_CHARS} characters"
        )
    if session.scalar(select(Reviewer).where(Reviewer.name == name)) is not None:
        raise ReviewerError(f"reviewer {name!r} exists; expected a new name")
    reviewer = Reviewer(name=name, password_hash=generate_password_hash(password, HASH_METHOD))
    session.add(reviewer)
    session.flush()
    logger.info("reviewer %s created", name)
    return reviewer


def authenticate(*, session: Session, name: str, password: str) -> Reviewer | None:
    """Returns the active reviewer whose name and password match, else None."""
    reviewer = session.scalar(select(Reviewer).where(Reviewer.name == name.strip()))
    if reviewer is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(reviewer.password_hash, password) or not reviewer.active:
        return None
    return reviewer


@click.group("reviewer")
def reviewer_group() -> None:
    """Manage dashboard reviewer accounts."""


@reviewer_group.command("create")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_command(name: str, password_stdin: bool) -> None:
    """Create reviewer NAME (the password is prompted for, or read from stdin)."""
    from moderation.db import make_engine, make_session_factory, session_scope
    from moderation.settings import load_settings

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    engine = make_engine(load_settings().resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            reviewer = create_reviewer(session=session, name=name, password=password)
            click.echo(f"created reviewer {reviewer.name} ({reviewer.id})")
    except ReviewerError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
