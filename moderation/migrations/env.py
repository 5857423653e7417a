"""Alembic environment: runs migrations against the URL that moderation.db.migrate passes in."""

from __future__ import annotations

import logging

from alembic import context

from moderation.db import make_engine
from moderation.models import Base

logger = logging.getLogger(__name__)

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: expected moderation.db.migrate(url) to pass one")
    return str(url)


def run_migrations_offline() -> None:
    """Emits SQL to stdout instead of executing it (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Runs migrations on a live connection; batch mode lets SQLite alter tables."""
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
